"""Prompt text lengths: words without a tokenizer, exact tokens with the bundled one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dpserve.bench.text import WORDS, HFTokenizer, PromptText


def test_word_count_is_exact_without_tokenizer() -> None:
    text = PromptText()
    rng = np.random.default_rng(0)
    for n in (1, 7, 300):
        out = text.make(rng, n)
        assert text.count(out) == n
        assert set(out.split()) <= set(WORDS)


def test_deterministic_under_seed() -> None:
    text = PromptText()
    assert text.make(np.random.default_rng(5), 50) == text.make(np.random.default_rng(5), 50)
    assert text.make(np.random.default_rng(5), 50) != text.make(np.random.default_rng(6), 50)


@pytest.mark.model
def test_exact_token_lengths_with_tokenizer(bundled_model_dir: Path) -> None:
    tok = HFTokenizer(bundled_model_dir)
    text = PromptText(tok)
    rng = np.random.default_rng(1)
    for n in (1, 16, 100, 513):
        assert len(tok.encode(text.make(rng, n))) == n


def test_missing_tokenizer_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        HFTokenizer(tmp_path)


def test_malformed_tokenizer_file(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer"):
        HFTokenizer(tmp_path)
