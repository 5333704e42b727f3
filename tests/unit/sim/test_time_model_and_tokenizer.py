"""The sim's step-time formula and its deterministic tokenizer."""

from __future__ import annotations

import pytest

from dpserve.sim.config import TimeModelConfig
from dpserve.sim.time_model import StepShape, TimeModel
from dpserve.sim.tokenizer import EOS_ID, IM_END_ID, IM_START_ID, NUM_SPECIAL, VOCAB_SIZE, SimTokenizer


def test_step_time_is_the_documented_roofline() -> None:
    """host + max(weights, math) + context: with base 5 ms (1.5 host) and 100 µs per sequence
    (30 host), 200 prefill tokens' 2 ms of math hide under the 3.5 ms weight read; 500 do not."""
    tm = TimeModel(TimeModelConfig(step_base_ms=5, prefill_token_us=10, decode_seq_us=100,
                                   context_token_ns=1000, time_scale=4))
    shape = StepShape(num_prefill_tokens=200, num_decode_seqs=3, num_context_tokens=1000)
    host = 1.5e-3 + 3 * 30e-6
    expected = host + max(3.5e-3, 200 * 10e-6 + 3 * 70e-6) + 1000 * 1e-6
    assert tm.step_time_s(shape) == pytest.approx(expected)
    assert tm.wall_time_s(shape) == pytest.approx(expected / 4)
    compute_bound = host + 500 * 10e-6 + 3 * 70e-6 + 1000 * 1e-6
    assert tm.step_time_s(StepShape(500, 3, 1000)) == pytest.approx(compute_bound)
    assert tm.step_time_s(StepShape(0, 0, 0)) == 0.0


def test_default_decode_step_resembles_8b_on_h100() -> None:
    tm = TimeModel(TimeModelConfig())
    one = tm.step_time_s(StepShape(0, 1, 1000))
    assert 0.006 < one < 0.009  # ~7 ms ITL at batch 1
    assert tm.step_time_s(StepShape(0, 256, 256 * 1000)) < 0.05


def test_tokenizer_is_deterministic_and_in_range() -> None:
    tok = SimTokenizer()
    ids = tok.encode("Hello, world! Hello again.\n\nBye")
    assert ids == SimTokenizer().encode("Hello, world! Hello again.\n\nBye")
    assert ids[0] != ids[4] and tok.encode(" Hello") == [ids[4]]
    assert all(NUM_SPECIAL <= t < VOCAB_SIZE for t in ids)
    assert tok.encode("a b") != tok.encode("b a")


def test_generated_filler_words_round_trip() -> None:
    tok = SimTokenizer()
    words = list(range(NUM_SPECIAL, NUM_SPECIAL + 50, 7))
    text = tok.decode([*words, EOS_ID])
    assert text.startswith(" ") and len(text.split()) == len(words)
    assert tok.encode(text) == words


def test_chat_template_renders_roles_and_opens_assistant_turn() -> None:
    tok = SimTokenizer()
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    ids = tok.apply_chat_template(msgs)
    assert ids.count(IM_START_ID) == 3 and ids.count(IM_END_ID) == 2
    assert ids[-len(tok.encode("assistant\n")):] == tok.encode("assistant\n")
    assert ids != tok.apply_chat_template([{"role": "user", "content": "be brief"}, msgs[1]])


def test_multi_turn_prompt_extends_the_previous_one() -> None:
    tok = SimTokenizer()
    turn1 = [{"role": "user", "content": "hi"}]
    first = tok.apply_chat_template(turn1)
    reply_ids = [NUM_SPECIAL + 5, NUM_SPECIAL + 9]
    turn2 = [*turn1, {"role": "assistant", "content": tok.decode(reply_ids)},
             {"role": "user", "content": "more"}]
    second = tok.apply_chat_template(turn2)
    assert second[:len(first) + len(reply_ids)] == first + reply_ids


def test_remembered_pieces_get_the_ids_a_fresh_tokenizer_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """The piece → id memo only saves work: a warm tokenizer, one whose memo is full, and a fresh
    one agree on every id, and the memo stops growing at its bound."""
    import dpserve.sim.tokenizer as tokenizer_module

    text = "Hello, world! tavo kesu 123 x_y\n\n  résumé ...  tavo Hello"
    warm = SimTokenizer()
    assert warm.encode(text) == warm.encode(text) == SimTokenizer().encode(text)
    monkeypatch.setattr(tokenizer_module, "_MAX_REMEMBERED_PIECES", 0)
    full = SimTokenizer()
    size = len(full._ids)
    assert full.encode(text + " brand new pieces") == SimTokenizer().encode(text + " brand new pieces")
    assert len(full._ids) == size
