"""`--model-aliases`: a client-facing name routed to the replicas serving the target, answered under
the alias (whole bodies and every streamed event, otherwise byte-exact), listed by /v1/models."""

from __future__ import annotations

import aiohttp
import openai
import orjson

from dpserve.http_names import WORKER_HEADER
from tests.integration.gateway.conftest import chat
from tests.integration.gateway.fake_worker import stream_chunks

ALIASES = ("gpt-alias=fake-model", "ghost=nobody-serves-this")


def _renamed(data: bytes) -> bytes:
    return data.replace(b'"model":"fake-model"', b'"model":"gpt-alias"')


async def test_non_streamed_answer_carries_the_alias_and_upstream_sees_the_target(  # type: ignore[no-untyped-def]
        fake_workers, gateway, client: aiohttp.ClientSession) -> None:
    [w] = await fake_workers(1, chunks=3)
    # Relayed as the replica sent it: migration off (with it on, the body is assembled from a stream).
    gw = await gateway([w], model_aliases=ALIASES, stream_migration=False)
    async with client.post(w.url + "/v1/chat/completions", json=chat("q")) as resp:
        direct = orjson.loads(await resp.read())
    async with client.post(gw.url + "/v1/chat/completions", json=chat("q", model="gpt-alias")) as resp:
        assert resp.status == 200 and resp.headers[WORKER_HEADER] == "w0"
        relayed = orjson.loads(await resp.read())
    assert relayed["model"] == "gpt-alias"
    assert {**relayed, "model": "fake-model", "created": 0} == {**direct, "created": 0}
    assert orjson.loads(w.stats.bodies[-1])["model"] == "fake-model"


async def test_streamed_answer_is_byte_exact_apart_from_the_model(  # type: ignore[no-untyped-def]
        fake_workers, gateway, client: aiohttp.ClientSession) -> None:
    [w] = await fake_workers(1, chunks=40, pad=300)
    gw = await gateway([w], model_aliases=ALIASES)
    body = chat("q", model="gpt-alias", stream=True, stream_options={"include_usage": True})
    async with client.post(gw.url + "/v1/chat/completions", json=body) as resp:
        assert resp.status == 200 and resp.headers[WORKER_HEADER] == "w0"
        data = await resp.read()
    expected = b"".join(stream_chunks(w.name, 40, True, 300))
    assert data == _renamed(expected) and data.count(b'"model":"gpt-alias"') == 42
    assert gw.state.registry.get("w0").in_flight == 0  # type: ignore[union-attr]


async def test_a_real_name_is_forwarded_untouched_when_aliases_exist(  # type: ignore[no-untyped-def]
        fake_workers, gateway, client: aiohttp.ClientSession) -> None:
    [w] = await fake_workers(1)
    gw = await gateway([w], model_aliases=ALIASES, stream_migration=False)  # else armed: see migration tests
    raw = b'{"model":  "fake-model", "messages": [{"role": "user", "content": "gpt-alias"}]}'
    async with client.post(gw.url + "/v1/chat/completions", data=raw,
                           headers={"Content-Type": "application/json"}) as resp:
        assert (await resp.json())["model"] == "fake-model"
    assert w.stats.bodies[-1] == raw


async def test_alias_routes_only_to_replicas_serving_its_target(fake_workers, gateway, client) -> None:  # type: ignore[no-untyped-def]
    alpha = await fake_workers(2, model="alpha")
    beta = await fake_workers(1, model="beta")
    gw = await gateway([*alpha, *beta], policy="round_robin", model_aliases=("a=alpha", "b=beta"))
    for alias, serving in (("a", alpha), ("b", beta)):
        ids = set()
        for i in range(6):
            async with client.post(gw.url + "/v1/chat/completions", json=chat(f"q{i}", model=alias)) as resp:
                assert resp.status == 200
                ids.add(resp.headers[WORKER_HEADER])
        assert {gw.state.registry.get(i).url for i in ids} == {w.url for w in serving}  # type: ignore[union-attr]


async def test_models_lists_aliases_and_unknown_ones_get_404(  # type: ignore[no-untyped-def]
        fake_workers, gateway, client: aiohttp.ClientSession) -> None:
    workers = await fake_workers(2)
    gw = await gateway(workers, model_aliases=ALIASES)
    async with client.get(gw.url + "/v1/models") as resp:
        data = (await resp.json())["data"]
    assert data == [{"id": "fake-model", "object": "model"}, {"id": "gpt-alias", "object": "model"}]
    for model, named in (("ghost", "`ghost` (an alias of `nobody-serves-this`)"), ("nope", "`nope`")):
        async with client.post(gw.url + "/v1/chat/completions", json=chat(model=model)) as resp:
            assert resp.status == 404
            error = (await resp.json())["error"]
        assert error["code"] == "model_not_found" and named in error["message"]
        assert "available: fake-model, gpt-alias" in error["message"]
    assert sum(w.stats.requests for w in workers) == 0


async def test_models_answers_from_cached_cards_and_refetches_only_failed_ones(  # type: ignore[no-untyped-def]
        fake_workers, gateway, client: aiohttp.ClientSession) -> None:
    [w] = await fake_workers(1, model="first")
    gw = await gateway([w])
    w.knobs.model = "second"  # the gateway keeps the card it fetched when the worker came up
    async with client.get(gw.url + "/v1/models") as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["first"]
    worker = gw.state.registry.get("w0")
    assert worker is not None
    worker.models, worker.model_cards = None, ()  # as if that fetch had failed: fetched again now
    async with client.get(gw.url + "/v1/models") as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["second"]
    assert worker.models == frozenset({"second"})


async def test_openai_client_with_an_alias(fake_workers, gateway) -> None:  # type: ignore[no-untyped-def]
    [w] = await fake_workers(1, chunks=4)
    gw = await gateway([w], model_aliases=ALIASES)
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as oai:
        done = await oai.chat.completions.create(model="gpt-alias",
                                                 messages=[{"role": "user", "content": "hi"}])
        # Streamed from the replica and answered whole by the gateway (resumable), under the alias.
        assert done.model == "gpt-alias" and done.choices[0].message.content == "".join(
            f"{w.name}-{i} " for i in range(4))
        stream = await oai.chat.completions.create(
            model="gpt-alias", messages=[{"role": "user", "content": "hi"}], stream=True)
        chunks = [chunk async for chunk in stream]
        assert {c.model for c in chunks} == {"gpt-alias"}
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(
            f"{w.name}-{i} " for i in range(4))
        assert [m.id for m in (await oai.models.list()).data] == ["fake-model", "gpt-alias"]
        with_legacy = await oai.completions.create(model="gpt-alias", prompt="abc")
        assert with_legacy.model == "gpt-alias"
        try:
            await oai.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "hi"}])
        except openai.NotFoundError as exc:
            assert "ghost" in str(exc)
        else:
            raise AssertionError("an alias of a model nobody serves must be a 404")
