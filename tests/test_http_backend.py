"""The OpenAI-compatible HTTP backend against a real server process on loopback."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from servers import processes

from llmtriage.backends.catalog import Catalog, ModelSpec
from llmtriage.backends.live import BackendError, ChatRequest, Completion
from llmtriage.backends.openai_http import MAX_REPLY_BYTES, OpenAIBackend, reply_cap


@pytest.fixture(scope="module")
def upstream():
    with processes.upstream() as url:
        yield url


def catalog(url: str, **overrides) -> Catalog:
    names = ["ok", "flaky-500", "always-500", "rate-429", "hang", "malformed", "wrong-shape",
             "deep", "endless", "stream-drop", "trickle", "usage-inf", "usage-negative",
             "usage-huge", "bad-chunk"]
    base = {"backend": "openai", "endpoint": f"{url}/v1", "timeout_s": 1.0, "max_retries": 3,
            "price_in": 1.0, "price_out": 2.0, "api_key": "sk-secret-do-not-print"}
    return Catalog(models=[ModelSpec(name=n, **{**base, **overrides}) for n in names])


def run(coro):
    return asyncio.run(coro)


def attempts(url: str, model: str, prompt: str) -> int:
    return httpx.get(f"{url}/attempts").json().get(f"{model}|{prompt}", 0)


async def _complete(url, model, prompt, **overrides):
    backend = OpenAIBackend(catalog(url, **overrides))
    try:
        return await backend.complete(model, ChatRequest.ask(prompt))
    finally:
        await backend.aclose()


def test_completion_with_logprobs_and_cost(upstream):
    c = run(_complete(upstream, "ok", "ping"))
    assert c.text == "pong" and c.tokens_in == 7 and c.tokens_out == 2
    assert [t.logprob for t in c.logprobs] == [-0.1, -0.2]
    assert c.logprobs[0].top[1] == ("pi", -2.5)
    assert c.cost_usd == pytest.approx((7 * 1.0 + 2 * 2.0) / 1e6)


def test_500s_are_retried_until_success(upstream):
    c = run(_complete(upstream, "flaky-500", "retry me"))
    assert c.text == "pong"
    assert attempts(upstream, "flaky-500", "retry me") == 3


def test_persistent_500_gives_a_clear_error_without_secrets(upstream):
    with pytest.raises(BackendError) as info:
        run(_complete(upstream, "always-500", "doomed", max_retries=2))
    message = str(info.value)
    assert "500" in message and "after 3 attempts" in message and "exploded" in message
    assert "sk-secret" not in message
    assert attempts(upstream, "always-500", "doomed") == 3


def test_429_waits_for_retry_after(upstream):
    start = time.perf_counter()
    c = run(_complete(upstream, "rate-429", "patience"))
    assert c.text == "pong"
    assert time.perf_counter() - start >= 1.0  # honoured Retry-After: 1
    assert attempts(upstream, "rate-429", "patience") == 2


def test_timeout_is_reported_and_not_retried(upstream):
    start = time.perf_counter()
    with pytest.raises(BackendError, match="timed out .no first byte within 0.5 s"):
        run(_complete(upstream, "hang", "hello?", timeout_s=0.5, max_retries=1))
    assert time.perf_counter() - start < 2
    assert attempts(upstream, "hang", "hello?") == 1  # a hang is not waited for twice


def test_a_trickling_upstream_hits_the_whole_call_deadline(upstream):
    # Headers at once, then a byte every half second: each read is quick, the call is not.
    start = time.perf_counter()
    with pytest.raises(BackendError, match="not done within 1.2 s") as caught:
        run(_complete(upstream, "trickle", "slowly", timeout_s=1.2, max_retries=0))
    assert time.perf_counter() - start < 2.7
    assert caught.value.status == 504 and caught.value.upstream_fault


@pytest.mark.parametrize("model", ["usage-inf", "usage-negative", "usage-huge"])
def test_nonsense_usage_is_an_upstream_failure(upstream, model):
    with pytest.raises(BackendError, match="not a token count") as caught:
        run(_complete(upstream, model, "count"))
    assert caught.value.upstream_fault  # so the pool falls back and the breaker counts it


def test_a_malformed_stream_chunk_is_an_upstream_failure(upstream):
    with pytest.raises(BackendError, match="malformed stream chunk"):
        run(_stream(upstream, "bad-chunk"))


def test_a_stream_that_never_ends_fails_at_the_reply_cap(upstream):
    started = time.perf_counter()
    cap = reply_cap(ChatRequest.ask("stream please").max_tokens)
    assert cap < MAX_REPLY_BYTES  # the request's own allowance, not the largest there is
    with pytest.raises(BackendError, match=f"stream over {cap} bytes"):
        run(_stream(upstream, "endless"))
    assert time.perf_counter() - started < 30


def test_a_model_at_capacity_fails_fast_without_blaming_the_upstream(upstream):
    async def burst():
        backend = OpenAIBackend(catalog(upstream, max_concurrency=2, max_queue=3,
                                        timeout_s=0.5, max_retries=0))
        try:
            return await asyncio.gather(*(backend.complete("hang", ChatRequest.ask(f"q{i}"))
                                          for i in range(10)), return_exceptions=True)
        finally:
            await backend.aclose()

    start = time.perf_counter()
    results = run(burst())
    saturated = [r for r in results if isinstance(r, BackendError) and r.saturated]
    assert len(saturated) == 5  # 2 running + 3 queued; the other 5 refused at once
    assert all(not r.upstream_fault and r.status == 503 for r in saturated)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(("model", "message"), [("malformed", "not JSON"),
                                                 ("wrong-shape", "malformed chat completion"),
                                                 ("deep", "nested more than 1024")])
def test_malformed_bodies(upstream, model, message):
    with pytest.raises(BackendError, match=message):
        run(_complete(upstream, model, "parse this"))


async def _stream(url, model):
    backend = OpenAIBackend(catalog(url))
    deltas, final = [], None
    try:
        async for item in backend.stream(model, ChatRequest.ask("stream please")):
            if isinstance(item, Completion):
                final = item
            else:
                deltas.append(item)
    finally:
        await backend.aclose()
    return deltas, final


def test_streaming(upstream):
    deltas, final = run(_stream(upstream, "ok"))
    assert deltas == ["po", "ng"]
    assert final.text == "pong" and final.tokens_out == 2
    assert [t.logprob for t in final.logprobs] == [-0.1, -0.2]


def test_stream_cut_midway_is_an_error(upstream):
    with pytest.raises(BackendError, match="stream"):
        run(_stream(upstream, "stream-drop"))


def test_connection_refused_is_retried_then_reported():
    with pytest.raises(BackendError, match="connection failed"):
        run(_complete(f"http://127.0.0.1:{processes.free_port()}", "ok", "anyone?",
                      max_retries=1))


def test_catalog_never_prints_its_secret(upstream):
    spec = catalog(upstream).spec("ok")
    assert "sk-secret" not in repr(spec) and "sk-secret" not in str(spec.model_dump())
    assert spec.secret() == "sk-secret-do-not-print"
