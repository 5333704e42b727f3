"""What a replica serves, read when it joins, and whether it matches the others serving that name.

A fleet behind one model name must answer alike: an fp8 replica beside bf16 ones, or one with a
shorter context, gives different answers (or 400s) depending on where a request lands. So when
a worker's model cards arrive the gateway compares, per served model name, what each replica
publishes — from `/v1/models`: `root`, `max_model_len`; from `/metrics` info gauges (vLLM's
`vllm:cache_config_info`, and `dpserve:replica_info` where a replica publishes it): KV-cache
dtype, dtype, quantization, tensor/pipeline parallel sizes — and refuses a worker that differs
from the accepted ones (`--allow-heterogeneous` opts out). A fact one side does not publish is
not compared: nothing is guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# Info gauges (value 1) whose labels describe how the replica runs.
INFO_METRICS = ("vllm:cache_config_info", "dpserve:replica_info")
# Labels compared across replicas; others (block counts, memory sizes) may differ harmlessly.
COMPARED_LABELS = ("cache_dtype", "dtype", "quantization", "tensor_parallel_size", "pipeline_parallel_size")
CARD_FIELDS = ("root", "max_model_len")
# `\b` first: without it a long run of word characters is tried from every position, each scan to
# its end (quadratic: a 40 KB line held the loop 9.5 s; an 8 MiB body, hours). A name starts a word.
_LABEL = re.compile(r'\b(\w+)="((?:[^"\\]|\\.)*)"')

Facts = Mapping[str, str]


def info_labels(metrics_text: str) -> dict[str, str]:
    """The compared labels of the info gauges in Prometheus text (later lines win)."""
    out: dict[str, str] = {}
    for line in metrics_text.splitlines():
        if line.startswith(INFO_METRICS) and "{" in line:
            for key, value in _LABEL.findall(line[line.index("{"):line.rfind("}") + 1]):
                if key in COMPARED_LABELS:
                    out[key] = value
    return out


def identity(cards: Iterable[Mapping[str, Any]], labels: Facts) -> dict[str, dict[str, str]]:
    """Served model id → the facts compared for it (its card's fields, then the replica's labels)."""
    out: dict[str, dict[str, str]] = {}
    for card in cards:
        facts = {f: str(card[f]) for f in CARD_FIELDS if card.get(f) is not None}
        out[str(card.get("id"))] = {**facts, **labels}
    return out


def differences(mine: Facts, theirs: Facts) -> list[str]:
    """'key mine ≠ theirs' for each fact both publish and disagree on."""
    return [f"{k} {mine[k]} ≠ {theirs[k]}" for k in mine if k in theirs and mine[k] != theirs[k]]


def refusal(newcomer: Mapping[str, Facts], accepted: Iterable[tuple[str, Mapping[str, Facts]]]) -> str | None:
    """Why the newcomer may not join (None: it matches every accepted worker on every shared model)."""
    for other_id, other in accepted:
        for model, facts in newcomer.items():
            if model in other and (diff := differences(facts, other[model])):
                return f"serves {model!r} unlike {other_id}: {', '.join(diff)}"
    return None
