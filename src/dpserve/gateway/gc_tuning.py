"""The gateway's garbage-collector settings: start-up objects frozen, young collections rarer.

Why (issue 16, measured with gc callbacks on the gateway under 2 KB distinct prompts): a full
collection walked every object the process had — modules, classes, aiohttp's tables, the prefix
tree — and took up to 40 ms of CPU on the event loop; the requests waiting behind it made the
p99. `gc.freeze()` after start-up moves what exists then (~50k objects that live as long as the
process) out of every later collection. Most request garbage is freed by reference counting,
so the young generation holds about the live in-flight objects whatever its threshold: a
higher threshold makes young collections rarer without making each one longer.
"""

from __future__ import annotations

import gc

# (young, middle, old) collection thresholds; CPython's defaults are (700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 20)


def settle_after_startup() -> None:
    """Collect once, freeze the survivors (they stay for the process's life), raise thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
