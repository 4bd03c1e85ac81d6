"""The device answers when the cloud cannot: live limits and outages through the gateway.

A real local model (SmolLM2, in the gateway process) is the device; the fault-injecting
upstream on loopback is the cloud (``switch``: set to hang, fail or answer on command).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest
from servers.processes import gateway, write_config

# Runs an embedded local model: `pytest -m 'not local_models'` skips it.
pytestmark = pytest.mark.local_models

DEVICE = """
[[models]]
name = "device"
backend = "llamacpp"
local = "smollm2-135m"
n_threads = 1
"""


@pytest.fixture(scope="module")
def edge(up, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge")
    # The device after "cloud" in the catalog: a failing cloud model falls back to it.
    config = write_config(tmp / "gateway.toml", up, {
        "cloud-slow": {"remote_name": "hang", "timeout_s": 20.0, "max_retries": 0,
                       "expected_latency_ms": 10000},
        "cloud": {"remote_name": "switch", "timeout_s": 20.0, "max_retries": 0,
                  "max_concurrency": 64, "price_in": 5.0, "price_out": 15.0,
                  "expected_latency_ms": 300},
    }, extra=DEVICE + """
[gateway]
request_log = "requests.sqlite"
breaker_failures = 1000
max_tokens = 8

[[policies]]
name = "cloud-first"
kind = "single"
model = "cloud"

[[policies]]
name = "slow-cloud"
kind = "single"
model = "cloud-slow"

[[policies]]
name = "device-first"
kind = "threshold-cascade"
ladder = ["device", "cloud"]
threshold = 100.0

[[policies]]
name = "capped"
kind = "single"
model = "cloud"
max_cost_usd = 0.00001
""")
    with gateway(config, tmp) as g:
        switch(up, "ok")
        # Warm the device model: loaded once, its latency measured.
        r = httpx.post(f"{g.url}/v1/chat/completions", timeout=120,
                       json={"model": "device", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        yield g, tmp


def switch(up: str, mode: str) -> None:
    httpx.post(f"{up}/switch/{mode}", timeout=5).raise_for_status()


def ask(url: str, model: str, headers: dict | None = None, **body) -> tuple[httpx.Response,
                                                                           float]:
    started = time.perf_counter()
    r = httpx.post(f"{url}/v1/chat/completions", timeout=60, headers=headers or {},
                   json={"model": model, "messages": [{"role": "user", "content": "ping"}],
                         **body})
    return r, (time.perf_counter() - started) * 1000


def test_a_model_too_slow_for_the_deadline_is_not_called_one_that_fits_answers(edge):
    g, _ = edge
    r, took = ask(g.url, "slow-cloud", {"x-triage-max-latency-ms": "5000"})
    assert r.status_code == 200, r.text
    info = r.json()["triage"]
    # The model that fits and would cost the most stands in: the fast cloud model.
    assert [s["model"] for s in info["steps"]] == ["cloud"]
    assert "cloud-slow expected to take 10,000 ms" in info["degraded"]
    assert r.headers["x-triage-degraded"] == "true"
    assert took < 5000


def test_a_hung_cloud_is_cut_at_the_deadline_then_avoided_and_the_device_answers(up, edge):
    g, _ = edge
    switch(up, "hang")
    try:
        # "cloud" looks fast (its prior): called after the device, and cut at the deadline;
        # the device's answer is kept.
        r, took = ask(g.url, "device-first", {"x-triage-max-latency-ms": "2500"})
        assert r.status_code == 200, r.text
        info = r.json()["triage"]
        assert info["answered_by"] == "device"
        assert "deadline passed" in info["degraded"]
        assert took < 2500 + 1500  # the deadline, plus the slack of a loaded 2-core box
        # That call showed the cloud takes at least ~2.5 s: a tighter deadline now goes to
        # the device without calling the cloud.
        r, took = ask(g.url, "cloud-first", {"x-triage-max-latency-ms": "2000"})
        assert r.status_code == 200, r.text
        info = r.json()["triage"]
        assert [s["model"] for s in info["steps"]] == ["device"]
        assert "cloud expected to take" in info["degraded"]
        # A request naming the model itself gets it or an error, never a stand-in.
        r, _ = ask(g.url, "cloud", {"x-triage-max-latency-ms": "2000"})
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "max_latency_ms_unmeetable"
        r, took = ask(g.url, "cloud", {"x-triage-max-latency-ms": "4000"})
        assert r.status_code == 504
        message = r.json()["error"]["message"]
        assert "max_latency_ms" in message and "x-triage-max-latency-ms" in message
        assert took < 4000 + 1500
    finally:
        switch(up, "ok")


def test_nothing_within_the_limits_is_a_422_naming_the_limit(edge):
    g, _ = edge
    r, _ = ask(g.url, "device-first", {"x-triage-max-latency-ms": "1"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "max_latency_ms_unmeetable"
    assert "x-triage-max-latency-ms" in r.json()["error"]["message"]
    # The device spends energy, "cloud" money, and the free "cloud-slow" time it lacks.
    r, _ = ask(g.url, "cloud-first", triage={"max_cost_usd": 0, "max_latency_ms": 5000})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "max_cost_usd_unmeetable"


def test_a_cost_cap_sends_the_request_to_the_device(edge):
    g, _ = edge
    r, _ = ask(g.url, "cloud-first", {"x-triage-max-cost-usd": "0.00001"})
    assert r.status_code == 200, r.text
    assert r.json()["triage"]["answered_by"] == "device"
    assert "may cost" in r.json()["triage"]["degraded"]
    # The policy's own default cap, and a request that raises it.
    r, _ = ask(g.url, "capped")
    assert r.json()["triage"]["answered_by"] == "device"
    r, _ = ask(g.url, "capped", {"x-triage-max-cost-usd": "1"})
    assert r.json()["triage"]["answered_by"] == "cloud"
    assert r.json()["triage"]["degraded"] is None
    assert "x-triage-degraded" not in r.headers


@pytest.mark.parametrize("header,value", [("x-triage-max-latency-ms", "soon"),
                                          ("x-triage-max-latency-ms", "-5"),
                                          ("x-triage-max-latency-ms", "nan"),
                                          ("x-triage-max-cost-usd", "1e9")])
def test_a_malformed_limit_is_a_400_naming_the_header(edge, header, value):
    g, _ = edge
    r, _ = ask(g.url, "cloud-first", {header: value})
    assert r.status_code == 400
    assert header in r.json()["error"]["message"]


def test_with_the_cloud_down_the_device_answers_degraded_and_nothing_is_lost(up, edge):
    g, tmp = edge
    switch(up, "500")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as c:
            return await asyncio.gather(*(
                c.post(f"{g.url}/v1/chat/completions",
                       headers={"x-triage-max-latency-ms": "30000"},
                       json={"model": "cloud-first",
                             "messages": [{"role": "user", "content": f"ping {i}"}]})
                for i in range(12)))

    try:
        responses = asyncio.run(burst())
    finally:
        switch(up, "ok")
    assert [r.status_code for r in responses] == [200] * 12
    for r in responses:
        info = r.json()["triage"]
        assert info["answered_by"] == "device"
        assert info["degraded"] == "cloud failed; device answered"
    ids = {r.json()["id"] for r in responses}
    with sqlite3.connect(tmp / "requests.sqlite") as db:
        logged = {row[0] for row in db.execute("SELECT id FROM requests WHERE status = 200")}
    assert ids <= logged
