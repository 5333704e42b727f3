"""The keyer's tokenizers remember a chat's earlier messages (serving.encode_memo): the ids are
the same as without the memo, on the bundled model's real tokenizer and the sim's, and a
tokenizer that encodes the text between special tokens in context gets no memo."""

from __future__ import annotations

import json
import random
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
    plain, remembered = HFTokenizer(bundled_model_dir), HFTokenizer(bundled_model_dir, memo_bytes=1 << 22)
    assert plain.encode_memo is None and remembered.encode_memo is not None
    _check_same_ids(plain, remembered, seed=1)
    assert remembered.encode_memo.num_hits > remembered.encode_memo.num_misses  # it was used


@pytest.mark.model
def test_block_keys_of_each_turn_equal_with_the_memo(bundled_model_dir: Path) -> None:
    plain, remembered = HFTokenizer(bundled_model_dir), HFTokenizer(bundled_model_dir, memo_bytes=1 << 22)
    assert remembered.encode_memo is not None
    history = _conversation(random.Random(3), 12)
    for turn in range(1, len(history) + 1):
        body = {"model": "m", "messages": history[:turn]}
        assert (block_keys_for(remembered, "/v1/chat/completions", body, 4)
                == block_keys_for(plain, "/v1/chat/completions", body, 4))


def test_sim_tokenizer_ids_equal_with_and_without_the_memo() -> None:
    _check_same_ids(SimTokenizer(), SimTokenizer(memo_bytes=1 << 22), seed=2)


_CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tiny_tokenizer(tmp_path: Path, case: str) -> Path:
    """A byte-level BPE with a few merges (so context matters) and chatml special tokens, saved
    as an HF model directory, with one odd-but-legal setting per `case`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = [("a", "b"), ("b", "c"), ("Ġ", "a"), ("ab", "c"), ("Ċ", "Ċ"), ("Ġ", "Ġ")]
    for piece in [a + b for a, b in merges] + ["▁"]:
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = (pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
                         if case == "metaspace_first"
                         else pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True, normalized=False),
                            AddedToken("<|im_end|>", special=True, normalized=False,
                                       rstrip=case == "rstrip")])
    if case == "mixed_normalized":  # matched in two passes by the library: "xabc" is xa|bc, not xab|c
        tok.add_tokens([AddedToken("bc", normalized=False), AddedToken("xab", normalized=True)])
    if case == "long_added_token":  # deeper than a pattern can nest: the memo is refused, not an error
        tok.add_tokens([AddedToken("ab" * 1500, normalized=False)])
    if case == "truncation":  # as saved after a call with truncation=True
        tok.enable_truncation(max_length=16)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")
    fast.chat_template = _CHATML
    fast.save_pretrained(tmp_path)
    if case == "split_special_tokens":
        config_path = tmp_path / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**config, "split_special_tokens": True}))
    return tmp_path


_TINY_PIECES = ["a", "b", "c", "ab", "abc", "xab", "bc", "x", " ", "  ", "\n", "\n\n", "<|im_end|>",
                "<|im_start|>", "!", "1"]


@pytest.mark.parametrize(("case", "has_memo"), [
    ("plain", True),
    ("truncation", True),  # cleared at load: no prompt is cut, with or without the memo
    ("metaspace_first", False),  # the piece after a special token gets no "▁" in context, alone it does
    ("rstrip", False),  # <|im_end|> takes the newline after it
    ("mixed_normalized", False),
    ("split_special_tokens", False),  # "<|im_end|>" in the text is not one token at all
    ("long_added_token", False),
])
def test_the_memo_is_kept_only_where_it_gives_the_same_ids(tmp_path: Path, case: str, has_memo: bool) -> None:
    model_dir = _tiny_tokenizer(tmp_path, case)
    plain, remembered = HFTokenizer(model_dir), HFTokenizer(model_dir, memo_bytes=1 << 22)
    assert (remembered.encode_memo is not None) == has_memo
    assert (remembered.no_memo_reason is None) == has_memo  # and when not, it says why
    rng = random.Random(5)
    for _ in range(150):
        messages = [{"role": rng.choice(["user", "assistant"]),
                     "content": "".join(rng.choice(_TINY_PIECES) for _ in range(rng.randint(0, 60)))}
                    for _ in range(rng.randint(1, 5))]
        assert remembered.apply_chat_template(messages) == plain.apply_chat_template(messages)


def test_a_saved_truncation_no_longer_cuts_prompts(tmp_path: Path) -> None:
    tokenizer = HFTokenizer(_tiny_tokenizer(tmp_path, "truncation"))
    assert len(tokenizer.encode("ab " * 100)) > 16


def test_a_message_the_replica_refuses_gets_no_keys_rather_than_an_error() -> None:
    """A lone surrogate cannot be tokenised: the replica answers 400, the keyer None (the tree routes it)."""
    for tokenizer in (SimTokenizer(), SimTokenizer(memo_bytes=1 << 22)):
        body = {"model": "m", "messages": [{"role": "user", "content": "bad \ud800 text"}]}
        assert block_keys_for(tokenizer, "/v1/chat/completions", body, 4) is None
