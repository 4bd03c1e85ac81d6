"""Fuzzing the gateway's HTTP API with hypothesis: no input may produce a 5xx or a crash.

Bodies range from arbitrary bytes and arbitrary JSON to near-valid OpenAI requests with
wrong types, out-of-range numbers, unknown roles and models, sent over real HTTP to a
gateway in its own process (its upstream answers "pong").
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers.processes import gateway, upstream, write_config

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/feedback")
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=20)
models = st.sampled_from(["main", "ok", "", "nope", "x" * 300]) | st.text(max_size=20)
roles = st.sampled_from(["user", "assistant", "system", "tool", ""]) | st.text(max_size=8)
messages = st.lists(st.fixed_dictionaries(
    {"role": roles, "content": st.text(max_size=40) | json_values}), max_size=4) | json_values
numbers = st.none() | st.integers(-10, 10_000) | st.floats(-5, 5) | st.text(max_size=5)
chat_bodies = st.fixed_dictionaries(
    {"model": models | json_values, "messages": messages},
    optional={"max_tokens": numbers, "temperature": numbers, "stream": st.booleans() | scalars,
              "max_completion_tokens": numbers, "n": numbers, "tools": json_values})
completion_bodies = st.fixed_dictionaries(
    {"model": models, "prompt": st.text(max_size=40) | st.lists(st.text(max_size=10),
                                                              max_size=3) | json_values},
    optional={"max_tokens": numbers, "stream": st.booleans()})
feedback_bodies = st.fixed_dictionaries(
    {"id": st.text(max_size=120) | json_values, "score": numbers | json_values},
    optional={"extra": scalars})
headers = st.fixed_dictionaries({}, optional={
    "x-triage-stream": st.sampled_from(["first", "accepted", "", "bogus"]),
    "x-triage-session": st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                                max_size=20),
    "authorization": st.sampled_from(["", "Bearer ", "bearer "]).flatmap(
        lambda scheme: st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                               min_size=1, max_size=30).map(lambda t: scheme + t))})


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    with upstream() as up:
        config = write_config(tmp / "gateway.toml", up, {
            "ok": {"remote_name": "ok", "max_concurrency": 8},
            "unsure": {"remote_name": "unsure", "max_concurrency": 8}}, extra="""
[gateway]
request_log = "requests.sqlite"
log_text = true

[[policies]]
name = "main"
kind = "threshold-cascade"
models = ["unsure", "ok"]
""")
        with gateway(config, tmp) as g:
            yield g.url
            assert g.proc.poll() is None, "the gateway died"
            assert httpx.get(f"{g.url}/health").status_code == 200


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.json()["error"]["message"]  # an OpenAI-shaped error, said plainly


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=st.binary(max_size=200), extra=headers)
def test_arbitrary_bytes(http, endpoint, body, extra):
    check(http.post(endpoint, content=body,
                    headers={"content-type": "application/json", **extra}))


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=json_values)
def test_arbitrary_json(http, endpoint, body):
    check(http.post(endpoint, content=json.dumps(body),
                    headers={"content-type": "application/json"}))


@FUZZ
@given(body=chat_bodies, extra=headers)
def test_near_valid_chat_requests(http, body, extra):
    check(http.post("/v1/chat/completions", json=body, headers=extra))


@FUZZ
@given(body=completion_bodies, extra=headers)
def test_near_valid_completions(http, body, extra):
    check(http.post("/v1/completions", json=body, headers=extra))


@FUZZ
@given(body=feedback_bodies)
def test_near_valid_feedback(http, body):
    check(http.post("/v1/feedback", json=body))
