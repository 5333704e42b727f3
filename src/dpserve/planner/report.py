"""The plan as JSON (`--json`, for scripts) and as a terminal table."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from dpserve.planner.formulas import param_counts
from dpserve.planner.predict import Prediction, Setting, finite_or_none
from dpserve.planner.recommend import Recommendation

QUEUEING_MODEL = (
    "each replica gets 1/DP of the load; up to min(max-num-seqs, KV room) requests run, the batch "
    "from Little's law (batch = arrival rate × time a request holds a slot); closed loop: requests "
    "beyond the slots wait (concurrency − slots) × service / slots; open loop: Poisson arrivals, the "
    "wait for a slot from M/M/c (Erlang C) halved for deterministic service (Allen-Cunneen); "
    "TTFT = that wait + half (p50) or all (p99) of a step + the prompt's chunked prefill; a request's "
    "TPOT is its mean step, whose prefill load is the prompts that arrive meanwhile (Poisson, mean = "
    "batch, p99 = mean + 2.33√mean)")


def _ms(seconds: float | None) -> float | None:
    value = finite_or_none(seconds)
    return None if value is None else round(value * 1e3, 3)


def _gb(nbytes: float | None) -> float | None:
    return None if nbytes is None else round(nbytes / 1e9, 3)


def layout_json(p: Prediction) -> dict[str, Any]:
    lay, mem, load = p.layout, p.memory, p.load
    out: dict[str, Any] = {
        "dp": lay.dp, "tp": lay.tp, "pp": lay.pp, "dp_attention": lay.dp_attention, "label": lay.label,
        "fits": p.fits, "why_not": p.why_not,
        "weights_gb_per_gpu": _gb(mem.weights_bytes if mem else None),
        "activation_gb_per_gpu": _gb(mem.activation_bytes if mem else None),
        "kv_gb_per_gpu": _gb(max(0.0, mem.kv_bytes) if mem else None),
        "kv_tokens_per_replica": mem.kv_tokens if mem else None,
        "max_concurrent_seqs": p.max_seqs, "batch_slots": p.slots,
        "decode_step_ms": _ms(p.decode_step_s), "prefill_ms": _ms(p.prefill_s),
    }
    if load is not None:
        out.update({"batch_per_replica": round(load.batch, 3), "output_tok_s": round(p.output_tok_s, 1),
                    "ttft_p50_ms": _ms(load.ttft_p50_s), "ttft_p99_ms": _ms(load.ttft_p99_s),
                    "tpot_p50_ms": _ms(load.tpot_p50_s), "tpot_p99_ms": _ms(load.tpot_p99_s),
                    "overloaded": load.overloaded, "bound": p.bound,
                    "capacity_tok_s": round(p.capacity_tok_s, 1)})
    out["slo_met"] = p.slo_met
    return out


def plan_json(s: Setting, preds: Sequence[Prediction], rec: Recommendation, num_gpus: int) -> dict[str, Any]:
    counts = param_counts(s.arch)
    w = s.workload
    return {
        "model": {"name": s.arch.name, "params": counts.total, "active_params": counts.matmul_per_token,
                  "moe": s.arch.is_moe, "mla": s.arch.is_mla},
        "gpu": dataclasses.asdict(s.gpu), "num_gpus": num_gpus, "gpus_per_node": s.gpus_per_node,
        "dtype": s.dtype, "kv_dtype": s.kv_dtype,
        "workload": {"prompt_len": w.prompt_len, "output_len": w.output_len, "concurrency": w.concurrency,
                     "request_rate": w.request_rate},
        "slo": {"ttft_ms": None if s.ttft_slo_s is None else s.ttft_slo_s * 1e3,
                "tpot_ms": None if s.tpot_slo_s is None else s.tpot_slo_s * 1e3, "judged_at": "p99"},
        "recommended": {**layout_json(rec.prediction), "regime": rec.regime, "reason": rec.reason},
        "layouts": [layout_json(p) for p in preds],
        "assumptions": dataclasses.asdict(s.assumptions),
        "queueing_model": QUEUEING_MODEL,
    }


_COLUMNS = ("layout", "fits", "W GB/GPU", "KV tok/repl", "slots", "step ms", "prefill ms", "batch",
            "out tok/s", "TTFT p50/p99 ms", "TPOT p50/p99 ms", "SLO", "bound", "cap tok/s")


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _row(p: Prediction, mark: str) -> list[str]:
    d = layout_json(p)
    if not p.fits:
        return [mark + p.layout.label, "no", _fmt(d["weights_gb_per_gpu"], 1), *["-"] * 11]
    return [mark + p.layout.label, "yes", _fmt(d["weights_gb_per_gpu"], 1), str(d["kv_tokens_per_replica"]),
            str(p.slots), _fmt(d["decode_step_ms"], 1), _fmt(d["prefill_ms"]),
            _fmt(d["batch_per_replica"], 1), _fmt(d["output_tok_s"]),
            "overloaded" if d["overloaded"] else f"{_fmt(d['ttft_p50_ms'])}/{_fmt(d['ttft_p99_ms'])}",
            f"{_fmt(d['tpot_p50_ms'], 1)}/{_fmt(d['tpot_p99_ms'], 1)}", "met" if p.slo_met else "MISSED",
            str(p.bound), _fmt(d["capacity_tok_s"])]


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Columns aligned: the first to the left, the rest (numbers) to the right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(header), *(line(r) for r in rows)])


def plan_text(s: Setting, preds: Sequence[Prediction], ordered: Sequence[Prediction], rec: Recommendation,
              num_gpus: int) -> str:
    counts = param_counts(s.arch)
    w = s.workload
    slo = ", ".join(x for x in (f"TTFT p99 ≤ {s.ttft_slo_s * 1e3:g} ms" if s.ttft_slo_s else "",
                                f"TPOT p99 ≤ {s.tpot_slo_s * 1e3:g} ms" if s.tpot_slo_s else "") if x)
    head = (f"{s.arch.name} ({counts.total / 1e9:.2f}B params, {s.dtype} weights, {s.kv_dtype} KV) on "
            f"{num_gpus} × {s.gpu.name} ({s.gpus_per_node} per node); {w.prompt_len} prompt + {w.output_len} "
            f"output tokens at {w.load_words}; SLO: {slo or 'none'}")
    unfit = [p for p in preds if not p.fits]
    rows = [_row(p, "* " if p is rec.prediction else "  ") for p in [*ordered, *unfit]]
    notes = [f"  {p.layout.label}: {p.why_not}" for p in unfit]
    parts = [head, "", format_table(rows, _COLUMNS), "",
             "step ms: one sequence alone; batch/out tok/s/TTFT/TPOT: per replica batch and fleet totals at "
             "the offered load; cap tok/s: the most the fleet serves within the SLOs.",
             "", f"recommended: {rec.reason}"]
    if notes:
        parts += ["", "does not fit:", *notes]
    return "\n".join(parts)
