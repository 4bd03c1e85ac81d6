"""The gateway with the official openai client, on the real local ladder, over loopback."""

from __future__ import annotations

import httpx
import openai
import pytest
from servers import processes

# Runs the embedded local models: `pytest -m 'not local_models'` skips it.
pytestmark = pytest.mark.local_models


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with processes.gateway(None, tmp_path_factory.mktemp("gateway")) as g:
        yield g.url


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="not-needed")


def test_models_lists_policies_and_models(client):
    ids = {m.id for m in client.models.list()}
    assert {"triage-cascade", "smollm2-135m", "qwen2.5-coder-1.5b"} <= ids


def test_cascade_answers_and_says_why(client):
    raw = client.chat.completions.with_raw_response.create(
        model="triage-cascade", messages=[{"role": "user", "content": "What is 17 * 23?"}])
    response = raw.parse()
    assert "391" in response.choices[0].message.content
    info = response.model_extra["triage"]
    assert info["answered_by"] == response.model == raw.headers["x-triage-model"]
    assert [s["model"] for s in info["steps"]][0] == "smollm2-135m"
    assert raw.headers["x-triage-models-called"].startswith("smollm2-135m")
    assert info["latency_ms"] > 0 and response.usage.completion_tokens > 0


def test_streaming_with_the_openai_client(client):
    chunks = list(client.chat.completions.create(
        model="triage-cascade", stream=True,
        messages=[{"role": "user", "content": "What is the capital of France?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_an_answer_cut_at_the_token_limit_says_so_and_a_stream_can_end_with_its_usage(
        client):
    """finish_reason is "length" when the accepted answer stopped at max_tokens (a client
    may then ask for the rest), streamed or not, passed through or through a cascade whose
    every answer was cut; stream_options.include_usage ends a stream with the usage."""
    question = [{"role": "user", "content": "Write a long story about a dragon."}]
    cut = client.chat.completions.create(model="smollm2-135m", max_tokens=3, messages=question)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
    whole = client.chat.completions.create(model="smollm2-135m", max_tokens=64,
                                           messages=[{"role": "user", "content": "Say hi."}])
    assert whole.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(
        model="triage-cascade", max_tokens=3, messages=question, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 3
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.chat.completions.create(model="smollm2-135m", max_tokens=3,
                                                messages=question, stream=True))
    assert plain[-1].choices[0].finish_reason == "length" and plain[-1].usage is None


def test_a_plain_model_is_passed_through_with_the_conversation(client):
    response = client.chat.completions.create(
        model="qwen2.5-coder-1.5b", max_tokens=16,
        messages=[{"role": "user", "content": "My name is Ada. Remember it."},
                  {"role": "assistant", "content": "Noted, Ada."},
                  {"role": "user", "content": "What is my name? One word."}])
    assert "Ada" in response.choices[0].message.content
    assert response.model_extra["triage"]["steps"][0]["model"] == "qwen2.5-coder-1.5b"


def test_bad_requests_get_clear_4xx(gateway, client):
    with pytest.raises(openai.NotFoundError, match="no policy or model"):
        client.chat.completions.create(model="gpt-9", messages=[
            {"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="triage-cascade", messages=[])
    r = httpx.post(f"{gateway}/v1/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    big = httpx.post(f"{gateway}/v1/chat/completions", content=b"x" * (2 << 20),
                     headers={"content-type": "application/json"})
    assert big.status_code == 413


def test_metrics_count_requests_calls_and_escalations(gateway, client):
    client.chat.completions.create(model="triage-cascade", messages=[
        {"role": "user", "content": "What is 17 * 23?"}])
    text = httpx.get(f"{gateway}/metrics").text
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
             for line in text.splitlines() if line and not line.startswith("#")}
    assert lines['triage_requests_total{policy="triage-cascade",status="200"}'] >= 1
    assert lines['triage_model_calls_total{model="smollm2-135m"}'] >= 1
    assert lines['triage_escalations_total{policy="triage-cascade"}'] >= 1
    assert lines['triage_request_seconds_count{policy="triage-cascade"}'] >= 1
    # The unknown model asked for earlier is counted without becoming a label of its own.
    assert lines['triage_requests_total{policy="unknown",status="404"}'] >= 1
    assert "gpt-9" not in text
