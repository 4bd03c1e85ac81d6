"""The gateway under failing upstreams, overload and shutdown: real processes on loopback.

The upstream's "switch" model fails on command (500s, hangs, connections dropped
mid-response, malformed JSON) and recovers; under each fault 100 concurrent clients must
all get an answer (from the fallback model) or a clear error, and the circuit breaker must
trip and then close again once the upstream is back.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from servers.processes import gateway, write_config

CLIENTS = 100


@pytest.fixture(scope="module")
def gw(up, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability")
    config = write_config(tmp / "gateway.toml", up, {
        "primary": {"remote_name": "switch", "timeout_s": 1.0, "max_retries": 1,
                    "max_concurrency": 128},
        "backup": {"remote_name": "ok", "max_concurrency": 128},
    }, extra="""
[gateway]
breaker_failures = 5
breaker_reset_s = 1.0
request_log = "requests.sqlite"

[[policies]]
name = "main"
kind = "threshold-cascade"
models = ["primary", "backup"]
""")
    with gateway(config, tmp) as g:
        yield g


async def burst(url: str, model: str, n: int = CLIENTS, **extra) -> list[httpx.Response]:
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], **extra}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n)) as c:
        return await asyncio.gather(*(c.post(f"{url}/v1/chat/completions", json=body)
                                      for _ in range(n)))


def requests_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("triage_requests_total{"))


def circuit(url: str, model: str) -> tuple[str, int]:
    """The model's circuit state and how often it has opened."""
    state = httpx.get(f"{url}/health").json()["circuits"].get(model)
    return (state["state"], state["trips"]) if state else ("closed", 0)


def until_probed(url: str, model: str, within_s: float = 10.0) -> None:
    """Wait until the model's circuit lets a probe through (half-open) or is closed: polled,
    not slept for, since the breaker's reset runs on the gateway process's own clock (its
    transitions are tested on an injected clock in test_breaker.py)."""
    deadline = time.monotonic() + within_s
    while circuit(url, model)[0] == "open":
        assert time.monotonic() < deadline, f"{model}'s circuit stayed open {within_s} s"
        time.sleep(0.05)


@pytest.mark.parametrize("fault", ["500", "hang", "drop", "malformed"])
def test_every_client_gets_an_answer_and_the_breaker_trips_and_recovers(up, gw, fault):
    httpx.post(f"{up}/switch/{fault}")
    before, trips = requests_total(gw.url), circuit(gw.url, "primary")[1]
    responses = asyncio.run(burst(gw.url, "main"))
    # The policy falls back to the healthy model: every one of the 100 is answered.
    assert len(responses) == CLIENTS
    assert [r.status_code for r in responses] == [200] * CLIENTS
    for r in responses:
        info = r.json()["triage"]
        assert info["answered_by"] == "backup"
        assert r.json()["choices"][0]["message"]["content"] == "pong"
    state, tripped = circuit(gw.url, "primary")
    assert tripped > trips and state in ("open", "half-open")  # reset_s is 1 s
    # Asked for by name, the failing model gets a clear error, never a silent drop.
    direct = asyncio.run(burst(gw.url, "primary", n=20))
    assert {r.status_code for r in direct} <= {502, 503, 504}  # 504: a hang's deadline
    for r in direct:
        message = r.json()["error"]["message"]
        assert "primary" in message and ("circuit open" in message or "upstream" in message)
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
    assert requests_total(gw.url) - before == CLIENTS + 20  # every request counted
    # The upstream recovers; after reset_s one probe closes the circuit.
    httpx.post(f"{up}/switch/ok")
    until_probed(gw.url, "primary")
    r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
        "model": "main", "messages": [{"role": "user", "content": "ping"}]})
    assert r.status_code == 200 and r.json()["triage"]["answered_by"] == "primary"
    assert circuit(gw.url, "primary")[0] == "closed"


def test_stream_cut_midway_is_retracted_and_answered_by_the_fallback(up, gw):
    httpx.post(f"{up}/switch/drop")
    try:
        with httpx.stream("POST", f"{gw.url}/v1/chat/completions", timeout=30,
                          headers={"x-triage-stream": "first"},
                          json={"model": "main", "stream": True,
                                "messages": [{"role": "user", "content": "ping"}]}) as r:
            events = [json.loads(line[5:]) for line in r.iter_lines()
                      if line.startswith("data:") and "[DONE]" not in line]
    finally:
        httpx.post(f"{up}/switch/ok")
    deltas = [e["choices"][0]["delta"].get("content", "") for e in events]
    retracts = [e["triage"]["retract"] for e in events if "retract" in e.get("triage", {})]
    assert deltas[1] == "po"  # the first model's chunk went out before the cut
    assert retracts == [2]  # then it was withdrawn
    assert "".join(deltas[deltas.index("po") + 1:]) == "pong"
    assert events[-1]["triage"]["steps"][0]["fallback_from"] == "primary"
    until_probed(gw.url, "primary")  # for later tests, should the cut have tripped it


@pytest.mark.slow
def test_overload_is_refused_with_429_and_retry_after(up, tmp_path):
    config = write_config(tmp_path / "small.toml", up, {
        "slow": {"remote_name": "slow", "max_concurrency": 64}}, extra="""
[gateway]
max_in_flight = 2
max_queue = 3
request_log = ""
""")
    with gateway(config, tmp_path) as g:
        responses = asyncio.run(burst(g.url, "slow", n=20))
    codes = [r.status_code for r in responses]
    assert len(codes) == 20 and set(codes) == {200, 429}
    assert codes.count(200) >= 5  # the 2 running and the 3 queued finish
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all("capacity" in r.json()["error"]["message"] for r in refused)


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests(up, tmp_path):
    config = write_config(tmp_path / "drain.toml", up, {
        "slow": {"remote_name": "slow", "max_concurrency": 64}}, extra="""
[gateway]
request_log = "log.sqlite"
""")
    with gateway(config, tmp_path) as g:
        async def scenario() -> list[httpx.Response]:
            pending = asyncio.ensure_future(burst(g.url, "slow", n=10))
            await asyncio.sleep(0.5)  # all 10 are in flight (the upstream takes 1.5 s)
            g.proc.terminate()
            return await pending

        responses = asyncio.run(scenario())
        # uvicorn drains, then re-raises the signal it caught: death by SIGTERM, not a crash.
        assert g.proc.wait(timeout=30) in (0, -15)
    assert [r.status_code for r in responses] == [200] * 10
    import sqlite3

    db = sqlite3.connect(tmp_path / "log.sqlite")
    assert db.execute("SELECT COUNT(*) FROM requests WHERE status = 200").fetchone()[0] == 10


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_request(up, tmp_path):
    """A request is answered only once its log row is committed: killed mid-load, the log
    is intact and holds every request a client got an answer to."""
    import signal
    import sqlite3

    config = write_config(tmp_path / "kill.toml", up, {
        "ok": {"remote_name": "ok", "max_concurrency": 64}}, extra="""
[gateway]
request_log = "log.sqlite"
""")
    acknowledged: list[str] = []
    with gateway(config, tmp_path) as g:
        async def load() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                async def worker(w: int) -> None:
                    for i in range(10_000):
                        try:
                            r = await client.post(f"{g.url}/v1/chat/completions", json={
                                "model": "ok", "messages": [
                                    {"role": "user", "content": f"client {w} asks {i}"}]})
                        except httpx.HTTPError:
                            return  # the gateway is gone
                        if r.status_code == 200:
                            acknowledged.append(r.json()["id"])

                async def killer() -> None:
                    await asyncio.sleep(3.0)
                    g.proc.send_signal(signal.SIGKILL)

                await asyncio.gather(killer(), *(worker(w) for w in range(16)))

        asyncio.run(load())
        assert g.proc.wait(timeout=30) == -9
    assert len(acknowledged) > 50
    db = sqlite3.connect(tmp_path / "log.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    logged = {row[0] for row in db.execute("SELECT id FROM requests WHERE status = 200")}
    missing = set(acknowledged) - logged
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged requests lost"
