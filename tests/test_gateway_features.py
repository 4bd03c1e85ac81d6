"""Gateway features over a real upstream process: text completions, sticky sessions,
streaming the first model's answer, the explanation headers, the openai client."""

from __future__ import annotations

import httpx
import openai
import pytest
from servers.processes import gateway, upstream, write_config


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    with upstream() as up:
        config = write_config(tmp / "gateway.toml", up, {
            "weak": {"remote_name": "unsure", "price_in": 0.1, "price_out": 0.1},
            "strong": {"remote_name": "ok", "price_in": 5.0, "price_out": 15.0},
            # A provider-prefixed name, as LiteLLM's; its key from a variable not set.
            "acme/fast": {"remote_name": "ok", "api_key_env": "TRIAGE_TEST_UNSET_KEY"},
            "gpt-4o": {"remote_name": "ok"},  # no price given, the table knows one
        }, extra="""
[gateway]
request_log = ""

[[policies]]
name = "cascade"
kind = "threshold-cascade"
models = ["weak", "strong"]
threshold = -1.0
""")
        with gateway(config, tmp) as g:
            yield g


@pytest.fixture(scope="module")
def client(gw):
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)


def test_the_cascade_escalates_and_explains_itself(client):
    raw = client.chat.completions.with_raw_response.create(
        model="cascade", messages=[{"role": "user", "content": "hello"}])
    response = raw.parse()
    info = response.model_extra["triage"]
    assert [s["model"] for s in info["steps"]] == ["weak", "strong"]
    assert info["steps"][0]["confidence"] == pytest.approx(-6.0)  # min logprob of "pang"
    assert info["answered_by"] == "strong" == raw.headers["x-triage-model"]
    assert raw.headers["x-triage-models-called"] == "weak,strong"
    assert raw.headers["x-triage-confidences"].startswith("-6")
    assert raw.headers["x-triage-id"] == response.id
    # Both calls are paid: 7 prompt and 2 answer tokens at each model's price per million.
    expected = (7 * 0.1 + 2 * 0.1) / 1e6 + (7 * 5.0 + 2 * 15.0) / 1e6
    assert info["cost_usd"] == pytest.approx(expected)
    assert response.choices[0].message.content == "pong"


def test_one_model_or_policy_is_retrieved_by_name_and_health_answers_head(gw, client):
    """The openai client's models.retrieve (GET /v1/models/NAME) was a bare 404 for every
    name; load balancers' HEAD /health a 405."""
    assert client.models.retrieve("cascade").model_extra["kind"] == "policy"
    assert client.models.retrieve("weak").id == "weak"
    # A name holding a slash was no route at all, encoded or not.
    assert client.models.retrieve("acme/fast").id == "acme/fast"
    assert httpx.get(f"{gw.url}/v1/models/acme%2Ffast").json()["id"] == "acme/fast"
    assert client.chat.completions.create(
        model="acme/fast", messages=[{"role": "user", "content": "hi"}]).choices[
            0].message.content == "pong"
    with pytest.raises(openai.NotFoundError, match="no policy or model 'gpt-9'"):
        client.models.retrieve("gpt-9")
    assert httpx.head(f"{gw.url}/health").status_code == 200


def test_the_start_says_which_key_variable_is_not_set_and_which_model_has_no_price(gw):
    """A key variable not set was found at the first call, as the upstream's 401; a model
    without a price was counted free by every budget and cost-aware policy, silently."""
    said = " ".join(gw.output().split())
    assert "warning: $TRIAGE_TEST_UNSET_KEY is not set: calls to acme/fast go without an " \
           "API key" in said
    assert "model acme/fast has no price_in or price_out: its calls count as free" in said
    assert "model gpt-4o has no price_in or price_out: its calls count as free (the " \
           "built-in table lists gpt-4o at $2.5 / $10 per 1M tokens)" in said
    assert "model weak has no price" not in said


def test_text_completions_endpoint(client):
    response = client.completions.create(model="cascade", prompt="hello")
    assert response.object == "text_completion"
    assert response.choices[0].text == "pong"
    assert response.model_extra["triage"]["answered_by"] == "strong"
    chunks = list(client.completions.create(model="weak", prompt="hello", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "pang"


def test_a_conversation_sticks_to_the_model_that_answered(client):
    messages = [{"role": "user", "content": "first turn"}]
    first = client.chat.completions.create(model="cascade", messages=messages)
    assert first.model_extra["triage"]["answered_by"] == "strong"
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "second turn"}]
    second = client.chat.completions.create(model="cascade", messages=messages)
    info = second.model_extra["triage"]
    assert info.get("sticky") is True
    assert [s["model"] for s in info["steps"]] == ["strong"]  # the weak model is skipped
    # A new conversation starts over at the bottom of the ladder.
    fresh = client.chat.completions.create(
        model="cascade", messages=[{"role": "user", "content": "another chat"}])
    assert fresh.model_extra["triage"]["steps"][0]["model"] == "weak"


def test_a_session_header_sticks_too(client):
    headers = {"x-triage-session": "chat-42"}
    client.chat.completions.create(model="cascade", extra_headers=headers,
                                   messages=[{"role": "user", "content": "a"}])
    again = client.chat.completions.create(model="cascade", extra_headers=headers,
                                           messages=[{"role": "user", "content": "b"}])
    assert again.model_extra["triage"]["steps"][0]["model"] == "strong"


def test_stream_first_sends_the_first_answer_then_retracts_it(client):
    stream = client.chat.completions.create(
        model="cascade", stream=True, extra_headers={"x-triage-stream": "first"},
        messages=[{"role": "user", "content": "stream me"}])
    chunks = list(stream)
    text = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    retracts = [c.model_extra["triage"]["retract"] for c in chunks
                if "retract" in (c.model_extra.get("triage") or {})]
    assert "".join(text) == "pangpong"  # what a client ignoring the extension would see
    assert retracts == [4]  # ... and the chunk that says to drop the 4 characters of "pang"
    assert chunks[-1].model_extra["triage"]["answered_by"] == "strong"


def test_stream_first_on_an_accepted_first_answer_needs_no_retraction(client):
    chunks = list(client.chat.completions.create(
        model="strong", stream=True, extra_headers={"x-triage-stream": "first"},
        messages=[{"role": "user", "content": "stream me too"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "pong"
    assert not any("retract" in (c.model_extra.get("triage") or {}) for c in chunks)


def test_metrics_show_fallbacks_calls_and_queue(gw, client):
    text = httpx.get(f"{gw.url}/metrics").text
    assert 'triage_model_calls_total{model="weak"}' in text
    assert "triage_in_flight 0.0" in text and "triage_queued 0.0" in text


def test_oversized_bodies_are_refused_chunked_or_not(gw):
    big = b'{"model": "weak", "messages": [{"role": "user", "content": "' + b"x" * (2 << 20)

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    for content in (big, chunks()):
        r = httpx.post(f"{gw.url}/v1/chat/completions", content=content, timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 413 and "over 1048576 bytes" in r.json()["error"]["message"]
    assert httpx.get(f"{gw.url}/health").status_code == 200


def test_the_task_header_picks_the_calibration_fitted_for_that_task(tmp_path):
    """A calibrated cascade fitted on two tasks where the weak model's answers at the same
    confidence are right on one and wrong on the other: live, `x-triage-task` picks that
    task's calibration, as the table's task column does offline; no label (or one not
    fitted) gets the pooled one."""
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for task, weak_right in (("easy", 1.0), ("hard", 0.0)):
        for i in range(200):
            conf = float(rng.uniform(-6.0, -3.0))  # live, "unsure" answers at -4.5
            rows += [{"prompt_id": f"{task}{i}", "prompt": f"{task} question {i}",
                      "task": task, "model": "weak", "quality": weak_right,
                      "cost_usd": 0.1, "confidence": conf, "confidence_signal": "mean_logprob"},
                     {"prompt_id": f"{task}{i}", "prompt": f"{task} question {i}",
                      "task": task, "model": "strong", "quality": 1.0, "cost_usd": 1.0,
                      "confidence": -0.1, "confidence_signal": "mean_logprob"}]
    table = tmp_path / "two-tasks.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    artifact = tmp_path / "cascade.npz"
    fit = subprocess.run([sys.executable, "-m", "llmtriage.cli", "fit", str(table), "--policy",
                          "calibrated-cascade", "--param", 'ladder=["weak","strong"]',
                          "--param", "threshold=0.8", "--out", str(artifact)],
                         capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr
    with upstream() as up:
        config = write_config(tmp_path / "gateway.toml", up, {
            "weak": {"remote_name": "unsure", "price_in": 0.1, "price_out": 0.1},
            "strong": {"remote_name": "ok", "price_in": 5.0, "price_out": 15.0},
        }, extra=f'[gateway]\nrequest_log = ""\n\n[[policies]]\nname = "calibrated"\n'
                 f'artifact = "{artifact}"\n')
        with gateway(config, tmp_path) as g:
            def called(task: str | None) -> list[str]:
                headers = {} if task is None else {"x-triage-task": task}
                r = httpx.post(f"{g.url}/v1/chat/completions", headers=headers, timeout=60,
                               json={"model": "calibrated",
                                     "messages": [{"role": "user", "content": "hello"}]})
                assert r.status_code == 200, r.text
                return [s["model"] for s in r.json()["triage"]["steps"]]

            assert called("easy") == ["weak"]
            assert called("hard") == ["weak", "strong"]
            # The pooled calibration: half right at any confidence, below 0.8.
            assert called(None) == called("unseen") == ["weak", "strong"]
            long = httpx.post(f"{g.url}/v1/chat/completions", timeout=60,
                              headers={"x-triage-task": "t" * 201},
                              json={"model": "calibrated",
                                    "messages": [{"role": "user", "content": "hello"}]})
            assert long.status_code == 400 and "x-triage-task" in long.text
