"""Model aliases: parsing the table, the byte-level renames both ways, SSE events split across reads."""

from __future__ import annotations

import json

import orjson
import pytest

from dpserve.config import ConfigError, parse_config
from dpserve.gateway.aliases import ModelAliases, StreamRenamer, parse_aliases
from dpserve.gateway.config import GatewayConfig
from dpserve.launcher.config import ServeConfig


def test_parse_aliases_maps_each_alias_to_its_served_name() -> None:
    assert parse_aliases(["gpt-4o=smollm2-135m", " mini = smollm2-135m "]) == {
        "gpt-4o": "smollm2-135m", "mini": "smollm2-135m"}
    assert parse_aliases([]) == {}


@pytest.mark.parametrize("entries, message", [
    (["gpt-4o"], "not ALIAS=SERVED_NAME"),
    (["=smollm"], "non-empty"),
    (["gpt-4o="], "non-empty"),
    (["same=same"], "to itself"),
    (["a=x", "a=y"], "given twice"),
    (["a=b", "b=c"], "do not chain"),
])
def test_bad_alias_tables_are_rejected(entries: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_aliases(entries)


def test_bad_aliases_are_config_errors_at_start_for_router_and_serve() -> None:
    with pytest.raises(ConfigError, match=r"--model-aliases: .*to itself"):
        parse_config(GatewayConfig, ["--model-aliases", "x=x"], "dpserve router")
    with pytest.raises(ConfigError, match="given twice"):
        parse_config(ServeConfig, ["--model-aliases", "a=m", "a=n"], "dpserve serve")
    cfg, _ = parse_config(ServeConfig, ["--model-aliases", "gpt-4o=smollm2-135m"], "dpserve serve")
    assert cfg.gateway.model_aliases == ("gpt-4o=smollm2-135m",)


def test_aliases_come_from_a_yaml_list_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "gw.yaml"
    path.write_text("model-aliases:\n  - gpt-4o=smollm2-135m\n  - mini=smollm2-135m\n")
    cfg, _ = parse_config(GatewayConfig, ["--config", str(path)], "dpserve router")
    assert parse_aliases(cfg.model_aliases) == {"gpt-4o": "smollm2-135m", "mini": "smollm2-135m"}


def test_target_is_none_for_names_that_are_not_aliases() -> None:
    aliases = ModelAliases({"gpt-4o": "smol"})
    assert aliases.target("gpt-4o") == "smol"
    assert aliases.target("smol") is None and aliases.target(None) is None
    assert aliases and not ModelAliases({})


def test_request_body_names_the_served_model_and_keeps_the_rest() -> None:
    raw = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "model gpt-4o"}], "n": 2}'
    out = orjson.loads(ModelAliases({"gpt-4o": "smol"}).request_body(raw, "smol"))
    assert out == {"model": "smol", "messages": [{"role": "user", "content": "model gpt-4o"}], "n": 2}


@pytest.mark.parametrize("dumps", [orjson.dumps, lambda o: json.dumps(o).encode()])
def test_response_body_renames_only_the_top_level_model(dumps) -> None:  # type: ignore[no-untyped-def]
    body = {"id": "c1", "model": "smol", "choices": [
        {"message": {"content": 'he said "model":"smol" and {"model": "smol"}'}}]}
    raw = dumps(body)
    out = ModelAliases({"gpt-4o": "smol"}).response_body(raw, "gpt-4o")
    assert orjson.loads(out) == {**body, "model": "gpt-4o"}
    assert raw.replace(b"smol", b"gpt-4o", 1).replace(b'"model": ', b'"model":', 1) == out


def test_alias_with_json_special_characters_is_written_as_valid_json() -> None:
    alias = 'we\\ird "name"'
    out = ModelAliases({alias: "smol"}).response_body(b'{"model":"smol","x":1}', alias)
    assert orjson.loads(out) == {"model": alias, "x": 1}


def test_cards_copy_the_served_card_under_the_alias_name() -> None:
    served = {"smol": {"id": "smol", "object": "model", "owned_by": "dpserve", "root": "smol"}}
    aliases = ModelAliases({"gpt-4o": "smol", "other": "absent"})
    assert aliases.cards(served) == [
        {"id": "gpt-4o", "object": "model", "owned_by": "dpserve", "root": "smol"}]


def _events(n: int) -> bytes:
    return b"".join(b'data: {"id":"x","model":"smol","choices":[{"delta":{"content":"t%d"}}]}\n\n' % i
                    for i in range(n)) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("size", [1, 3, 7, 19, 64, 10_000])
def test_stream_renamer_is_exact_whatever_the_read_boundaries(size: int) -> None:
    stream = _events(5)
    renamer = StreamRenamer(ModelAliases({"gpt-4o": "smol"}), "gpt-4o")
    out = b"".join(renamer.feed(stream[i:i + size]) for i in range(0, len(stream), size)) + renamer.flush()
    assert out == stream.replace(b'"model":"smol"', b'"model":"gpt-4o"')


def test_stream_renamer_holds_only_an_incomplete_event() -> None:
    renamer = StreamRenamer(ModelAliases({"a": "smol"}), "a")
    assert renamer.feed(b'data: {"model":"smol"}\n\ndata: {"mod') == b'data: {"model":"a"}\n\n'
    assert renamer.feed(b'el":"smol"}\r\n\r\n') == b'data: {"model":"a"}\r\n\r\n'
    assert renamer.feed(b'data: {"model":"sm') == b""
    assert renamer.flush() == b'data: {"model":"sm' and renamer.flush() == b""
