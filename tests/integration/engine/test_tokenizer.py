"""HFTokenizer: same ids and text as transformers, chat template from the model dir, thread-safe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.model

TEXTS = ["Hello there, how are you?", "  leading spaces and émojis 🙂 — 日本語", "a\nb\tc", "1234567 + 89"]


def test_matches_transformers(bundled_model_dir: Path, tokenizer: Any) -> None:
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(bundled_model_dir))
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False)
        assert tokenizer.decode([*ids, *tokenizer.eos_token_ids]) == ref.decode(ids, skip_special_tokens=True)
    assert tokenizer.vocab_size == len(ref)


def test_chat_template_opens_the_assistant_turn(tokenizer: Any) -> None:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    text = tokenizer.decode(ids)
    assert text.rstrip().endswith("assistant") and "Hi" in text
    with pytest.raises(ValueError):
        tokenizer.apply_chat_template([{"role": "user"}])  # no content: the template cannot render


def test_concurrent_encode_and_decode(tokenizer: Any) -> None:
    long_text = " ".join(TEXTS) * 200
    expected = tokenizer.encode(long_text)

    def work(i: int) -> bool:
        return tokenizer.encode(long_text) == expected if i % 2 else bool(tokenizer.decode(expected[:50]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(64)))
