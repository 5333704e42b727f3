"""With the bundled model's real tokenizer, incremental detokenisation (one token at a time, or in
uneven groups) gives exactly the full decode, and never sends a broken character."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from dpserve.serving.detokenizer import IncrementalDetokenizer

pytestmark = pytest.mark.model

TEXTS = [
    "Café: 🌟🌟 naïve résumé — 東京タワー and Ελληνικά!\n\n  indented\tcode() {}",
    "Plain English words, numbers 12345 and punctuation...?!",
]


class HFDecode:
    """Just enough of the Tokenizer protocol for the detokenizer."""

    eos_token_ids = (0,)

    def __init__(self, path: Path) -> None:
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(token_ids), skip_special_tokens=True))

    def apply_chat_template(self, messages: list[dict[str, Any]], *,
                            continue_final_message: bool = False) -> list[int]:
        raise ValueError("not needed")


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_incremental_equals_full_decode(bundled_model_dir: Path, text: str, seed: int) -> None:
    tok = HFDecode(bundled_model_dir)
    ids = tok.encode(text)
    rng = random.Random(seed)
    detok = IncrementalDetokenizer(tok)
    pieces, i = [], 0
    while i < len(ids):
        step = 1 if seed == 0 else rng.randint(1, 4)
        pieces.append(detok.push(ids[i:i + step]))
        i += step
    pieces.append(detok.flush())
    assert "".join(pieces) == tok.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)
