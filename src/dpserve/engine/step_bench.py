"""In-process decode-step benchmark: step time, tokens/s and GB/s of weights read per decode step.

    python -m dpserve.engine.step_bench [--model smollm2-135m] [--batch-sizes 1 16] [--threads N] [--profile]

No HTTP: it isolates the engine (schedule + forward + sample) from the server and the client.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import TYPE_CHECKING

from dpserve.config import DEFAULT_MODEL
from dpserve.serving.engine_client import SamplingParams

if TYPE_CHECKING:
    from dpserve.engine.llm_engine import LLMEngine


def measure(engine: LLMEngine, batch_size: int, prompt_len: int, steps: int, rng: random.Random,
            profile: bool = False) -> float:
    """Best decode step time (s) with `batch_size` running sequences of ~prompt_len context; with
    `profile`, also print where 10 more decode steps spend their CPU time, by torch op."""
    params = SamplingParams(max_tokens=steps + 12, temperature=0.0, ignore_eos=True)  # + profiled steps
    for i in range(batch_size):
        prompt = [rng.randrange(100, 30000) for _ in range(prompt_len)]
        engine.add_request(f"bench-{batch_size}-{i}-{rng.random()}", prompt, params)
    while any(s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running) \
            or engine.scheduler.waiting:
        engine.step()
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        engine.step()
        best = min(best, time.perf_counter() - start)
    if profile:
        _print_profile(engine, steps=10)
    while engine.has_work:
        engine.step()
    return best


def _print_profile(engine: LLMEngine, steps: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            engine.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table per batch size")
    args = parser.parse_args()

    import torch

    from dpserve.engine.config import EngineConfig
    from dpserve.engine.llm_engine import LLMEngine
    from dpserve.model_store import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = LLMEngine(EngineConfig(model=args.model, dtype=args.dtype), resolve_model(args.model).path)
    weight_bytes = engine.runner.decode_weight_bytes
    print(f"weights read per decode step: {weight_bytes / 1e6:.0f} MB; "
          f"torch threads {torch.get_num_threads()}")
    rng = random.Random(0)
    for batch_size in args.batch_sizes:
        best = measure(engine, batch_size, args.prompt_len, args.steps, rng, args.profile)
        print(f"batch {batch_size:>3}: best step {best * 1e3:6.1f} ms  {batch_size / best:7.1f} tok/s  "
              f"{weight_bytes / best / 1e9:5.1f} GB/s of weights")


if __name__ == "__main__":
    main()
