"""Prompt text of a target token length: random common words, or exact lengths with a real tokenizer.

Without a tokenizer, one word counts as one token. That is exact for a whitespace tokenizer such as
the simulator's cheap one and close for BPE tokenizers on common English words (each of the words
below is a single token with its leading space in GPT-2/Llama-style vocabularies; chat templates
add a few tokens on top). With `--tokenizer DIR` the text is cut at exactly N tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

_WORD_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one "
    "had by word but not what all were we when your can said there use an each which she do how their "
    "if will up other about out many then them these so some her would make like him into time has "
    "look two more write go see number no way could people my than first water been call who oil its "
    "now find long down day did get come made may part over new sound take only little work know place "
    "year live me back give most very after thing our just name good sentence man think say great where "
    "help through much before line right too mean old any same tell boy follow came want show also "
    "around form three small set put end does another well large must big even such because turn here "
    "why ask went men read need land different home us move try kind hand picture again change off play "
    "spell air away animal house point page letter mother answer found study still learn should world"
)
WORDS = tuple(_WORD_TEXT.split())


class TokenCounter(Protocol):
    """The part of a tokenizer we need."""

    def encode(self, text: str) -> Sequence[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...


class HFTokenizer:
    """A `tokenizers` tokenizer loaded from an HF model dir (tokenizer.json), no special tokens."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {model_dir}")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust binding raises a bare Exception for malformed files
            raise ValueError(f"{path} is not a valid tokenizer.json: {exc}") from exc
        self._tok.no_truncation()  # a tokenizer.json saved with these would miscount every prompt
        self._tok.no_padding()

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(token_ids)))


class PromptText:
    """Makes and measures prompt text; `tokenizer` None means 1 word ≈ 1 token."""

    def __init__(self, tokenizer: TokenCounter | None = None) -> None:
        self._tokenizer = tokenizer

    def count(self, text: str) -> int:
        """Tokens in `text` (words without a tokenizer)."""
        if self._tokenizer is None:
            return len(text.split())
        return len(self._tokenizer.encode(text))

    def make(self, rng: np.random.Generator, num_tokens: int) -> str:
        """Random words that measure `num_tokens` tokens (exactly, with a tokenizer, where the
        tokenizer round-trips; never fewer than one word)."""
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=max(num_tokens, 1))]
        text = " ".join(words)
        if self._tokenizer is None:
            return text
        return self._fit(text, num_tokens, rng)

    def _fit(self, text: str, num_tokens: int, rng: np.random.Generator) -> str:
        tok = self._tokenizer
        assert tok is not None
        ids = list(tok.encode(text))
        while len(ids) < num_tokens:  # words of several tokens are rare; top up
            text += " " + " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=num_tokens))
            ids = list(tok.encode(text))
        # decode(encode) can merge differently at the cut; shorten until it measures right.
        for cut in range(num_tokens, 0, -1):
            candidate = tok.decode(ids[:cut])
            if len(tok.encode(candidate)) <= num_tokens:
                return candidate
        return tok.decode(ids[:1])
