"""The keyer's tokenizers remember a chat's earlier messages (serving.encode_memo): the ids are
the same as without the memo, on the bundled model's real tokenizer and the sim's, and a
tokenizer that encodes the text between special tokens in context gets no memo."""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from dpserve.engine.tokenizer import HFTokenizer
from dpserve.gateway.kv_events.prompt_keys import block_keys_for
from dpserve.sim.tokenizer import SimTokenizer

PIECES = ["hello", " world", "  ", "\n", "\t", "12", "345", ".", "?!", "é", "東京", "🌟", "<|im_end|>",
          "<|im_start|>", "<|im", "user\n", " assistant", ""]


def _conversation(rng: random.Random, turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": "You answer briefly."})
    for turn in range(turns):
        role = "user" if turn % 2 == 0 else "assistant"
        messages.append({"role": role, "content": "".join(rng.choice(PIECES)
                                                          for _ in range(rng.randint(0, 30)))})
    return messages


def _check_same_ids(plain: Any, remembered: Any, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        history = _conversation(rng, 8)
        for turn in range(1, len(history) + 1):  # every turn re-sends the history before it
            messages = history[:turn]
            assert remembered.apply_chat_template(messages) == plain.apply_chat_template(messages)
            assert (remembered.apply_chat_template(messages, continue_final_message=True)
                    == plain.apply_chat_template(messages, continue_final_message=True))


@pytest.mark.model
def test_bundled_model_ids_equal_with_and_without_the_memo(bundled_model_dir: Path) -> None:
    plain, remembered = HFTokenizer(bundled_model_dir), HFTokenizer(bundled_model_dir, memo_chars=1 << 20)
    assert plain.encode_memo is None and remembered.encode_memo is not None
    _check_same_ids(plain, remembered, seed=1)
    assert remembered.encode_memo.num_hits > remembered.encode_memo.num_misses  # it was used


@pytest.mark.model
def test_block_keys_of_each_turn_equal_with_the_memo(bundled_model_dir: Path) -> None:
    plain, remembered = HFTokenizer(bundled_model_dir), HFTokenizer(bundled_model_dir, memo_chars=1 << 20)
    history = _conversation(random.Random(3), 12)
    for turn in range(1, len(history) + 1):
        body = {"model": "m", "messages": history[:turn]}
        assert (block_keys_for(remembered, "/v1/chat/completions", body, 4)
                == block_keys_for(plain, "/v1/chat/completions", body, 4))


def test_sim_tokenizer_ids_equal_with_and_without_the_memo() -> None:
    _check_same_ids(SimTokenizer(), SimTokenizer(memo_chars=1 << 20), seed=2)


def _tiny_tokenizer(tmp_path: Path, prepend_scheme: str, rstrip: bool) -> Path:
    """A character-level tokenizer with chatml special tokens, saved as an HF model directory."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    chars = ["<unk>", "▁", *string.ascii_letters, *string.digits, *string.punctuation, " ", "\n", "\t"]
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True, normalized=False),
                            AddedToken("<|im_end|>", special=True, normalized=False, rstrip=rstrip)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fast.save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("prepend_scheme", "rstrip", "has_memo"), [
    ("never", False, True),
    ("first", False, False),  # the piece after a special token gets no "▁" in context, alone it does
    ("never", True, False),  # <|im_end|> takes the newline after it
])
def test_a_tokenizer_that_encodes_pieces_in_context_gets_no_memo(
        tmp_path: Path, prepend_scheme: str, rstrip: bool, has_memo: bool) -> None:
    model_dir = _tiny_tokenizer(tmp_path, prepend_scheme, rstrip)
    plain, remembered = HFTokenizer(model_dir), HFTokenizer(model_dir, memo_chars=1 << 20)
    assert (remembered.encode_memo is not None) == has_memo
    _check_same_ids(plain, remembered, seed=4)
