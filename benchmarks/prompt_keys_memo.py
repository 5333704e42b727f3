"""What remembering a chat's messages (serving/encode_memo.py) saves precise_prefix's tokenizer
process: a request's block keys per turn of a multi-turn chat, without and with the memo.

Each turn re-sends the history (user messages of --user-words bench words, replies of
--reply-words) plus a new user message. As in a real session, the memo has seen each earlier
request (the history's user messages) but not the last reply; every timed call gets a new user
message and a new last reply of its own. Medians of --repeats calls per turn, with keys checked
equal both ways.

    flock /tmp/dpserve-bench.lock .venv/bin/python benchmarks/prompt_keys_memo.py \\
        --tokenizers sim smollm2-135m
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from dpserve.bench.text import WORDS
from dpserve.gateway.kv_events.prompt_keys import block_keys_for, load_tokenizer
from dpserve.serving.encode_memo import DEFAULT_MAX_BYTES

ENDPOINT = "/v1/chat/completions"
BLOCK_SIZE = 16


def words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def measure(spec: str, turns: int, user_words: int, reply_words: int, repeats: int) -> list[dict[str, Any]]:
    plain, remembered = load_tokenizer(spec), load_tokenizer(spec, memo_bytes=DEFAULT_MAX_BYTES)
    seen: list[dict[str, str]] = []  # the messages of the requests the memo has keyed
    rows = []
    for turn in range(turns):
        plain_s, memo_s, tokens = [], [], 0
        for r in range(repeats):
            seed = 1000 * turn + r + 1  # a new last reply and a new user message per call
            new = [{"role": "assistant", "content": words(reply_words, seed)}] if turn else []
            new.append({"role": "user", "content": words(user_words, -seed)})
            body = {"model": "m", "messages": [*seen, *new]}
            t0 = time.perf_counter()
            expected = block_keys_for(plain, ENDPOINT, body, BLOCK_SIZE)
            t1 = time.perf_counter()
            got = block_keys_for(remembered, ENDPOINT, body, BLOCK_SIZE)
            t2 = time.perf_counter()
            if got != expected or expected is None:
                raise SystemExit(f"{spec}: keys differ with the memo at turn {turn}")
            plain_s.append(t1 - t0)
            memo_s.append(t2 - t1)
            tokens = expected[1]
        rows.append({"tokenizer": spec, "turn": turn + 1, "prompt_tokens": tokens,
                     "plain_us": statistics.median(plain_s) * 1e6,
                     "memo_us": statistics.median(memo_s) * 1e6})
        # this turn's own request (the reply to the turn before, then its user message), keyed
        if turn:
            seen.append({"role": "assistant", "content": words(reply_words, 10**6 + turn)})
        seen.append({"role": "user", "content": words(user_words, -(10**6 + turn))})
        block_keys_for(remembered, ENDPOINT, {"messages": seen}, BLOCK_SIZE)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizers", nargs="+", default=["sim"])
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--user-words", type=int, default=256)
    p.add_argument("--reply-words", type=int, default=32)
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args()
    print("| tokenizer | turn | prompt tokens | keys µs, no memo | keys µs, memo | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for spec in args.tokenizers:
        for row in measure(spec, args.turns, args.user_words, args.reply_words, args.repeats):
            print(f"| {row['tokenizer']} | {row['turn']} | {row['prompt_tokens']} | {row['plain_us']:.0f} "
                  f"| {row['memo_us']:.0f} | {row['plain_us'] / row['memo_us']:.1f}× |")


if __name__ == "__main__":
    main()
