"""Two gateway processes sharing Redis and one PostgreSQL request log: limits hold across
both, and every acknowledged request is in the one log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from contextlib import ExitStack

import httpx
import pandas as pd
import psycopg
import pytest
import redis
from servers.processes import gateway, postgres_server, redis_server, write_config

from llmtriage.serving.guard import key_hash

pytestmark = pytest.mark.slow

#: Per Redis URL, how to start it again on its port (it lives until the module ends).
RESTART: dict = {}
KEYS = {"limited": "tri-replica-limited", "budget": "tri-replica-budget",
        "plain": "tri-replica-plain", "heavy": "tri-replica-heavy"}


@pytest.fixture(scope="module")
def replicas(up, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replicas")
    with ExitStack() as servers:
        url = servers.enter_context(redis_server(tmp))
        pg = servers.enter_context(postgres_server())
        RESTART[url] = lambda: servers.enter_context(redis_server(tmp, port_of(url)))
        # The bandit's prior: "ok" right on 80% of 40 prompts, "backup" on 50%.
        pd.DataFrame([{"prompt_id": f"p{i}", "prompt": f"Prior question {i} on {i % 7}",
                       "model": model, "quality": float(i % 10 < cut), "cost_usd": 0.0}
                      for i in range(40) for model, cut in (("ok", 8), ("backup", 5))]
                     ).to_csv(tmp / "prior.csv", index=False)
        config = write_config(tmp / "gateway.toml", up, {
            "ok": {"remote_name": "ok", "price_in": 1000.0, "price_out": 1000.0,
                   "max_concurrency": 64},
            "backup": {"remote_name": "ok", "max_concurrency": 64},
            "broken": {"remote_name": "always-500", "max_retries": 0}}, extra=f"""
[gateway]
breaker_failures = 3
breaker_reset_s = 30
database_url = "{pg}"
log_text = true
state_url = "{url}"

[[keys]]
name = "limited"
sha256 = "{key_hash(KEYS['limited'])}"
requests_per_minute = 10

[[keys]]
name = "budget"
sha256 = "{key_hash(KEYS['budget'])}"
budget_usd = 0.05

[[keys]]
name = "plain"
sha256 = "{key_hash(KEYS['plain'])}"

[[keys]]
name = "heavy"
sha256 = "{key_hash(KEYS['heavy'])}"
requests_per_minute = 100000

[[policies]]
name = "sticky"
kind = "single"
model = "ok"

[[policies]]
name = "learner"
kind = "bandit"
table = "prior.csv"
alpha = 0.0
""")
        with gateway(config, tmp) as a, gateway(config, tmp) as b:
            yield a, b, pg, url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def post(url: str, key: str, **extra) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS[key]}", **extra.pop("headers", {})}
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": "sticky", "max_tokens": 1,
                            "messages": [{"role": "user", "content": "hi"}], **extra})


def simultaneous(urls: list[str], key: str, n: int) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, headers={
                "authorization": f"Bearer {KEYS[key]}"}) as client:
            return await asyncio.gather(*(client.post(
                f"{urls[i % len(urls)]}/v1/chat/completions", json={
                    "model": "sticky", "max_tokens": 1,
                    "messages": [{"role": "user", "content": "hi"}]}) for i in range(n)))
    return asyncio.run(run())


def test_a_rate_limit_holds_exactly_across_replicas(replicas):
    a, b, _, _ = replicas
    codes = [r.status_code for r in simultaneous([a.url, b.url], "limited", 50)]
    assert codes.count(200) == 10 and codes.count(429) == 40


def test_a_budget_is_not_overshot_across_replicas(replicas):
    a, b, pg, url = replicas
    codes = [r.status_code for r in simultaneous([a.url, b.url], "budget", 50)]
    assert codes.count(200) >= 4 and set(codes) <= {200, 429}
    spent = float(redis.Redis.from_url(url).hget("triage:key:budget", "spent"))
    assert spent <= 0.05 + 1e-9  # each request reserves $0.011 and spends $0.009
    with psycopg.connect(pg) as db:
        logged = db.execute("SELECT SUM(cost_usd), COUNT(*) FROM requests WHERE client = "
                            "'budget' AND status = 200").fetchone()
    assert logged[0] == pytest.approx(spent)  # one log, both replicas' rows
    assert logged[1] == codes.count(200)


def test_a_session_sticks_whichever_replica_serves_the_next_turn(replicas):
    a, b, _, _ = replicas
    session = {"x-triage-session": "conversation-7"}
    assert "sticky" not in post(a.url, "plain", headers=session).json()["triage"]
    assert post(b.url, "plain", headers=session).json()["triage"]["sticky"] is True


def test_feedback_keeps_one_latest_score_across_replicas(replicas):
    a, b, _, url = replicas
    answer = post(a.url, "plain").json()
    for replica, score in ((a, 0.1), (b, 0.7), (a, 0.4)):
        r = httpx.post(f"{replica.url}/v1/feedback", timeout=30, json={
            "id": answer["id"], "score": score},
            headers={"authorization": f"Bearer {KEYS['plain']}"})
        assert r.status_code == 200 and r.json()["logged"] is True
    assert float(redis.Redis.from_url(url).get(f"triage:score:{answer['id']}")) == 0.4


def test_with_redis_down_limits_fail_closed_and_the_rest_is_served(replicas):
    a, _, _, url = replicas
    redis.Redis.from_url(url).shutdown(nosave=True)
    try:
        down = post(a.url, "budget")
        assert down.status_code == 503 and down.json()["error"]["code"] == "state_unavailable"
        assert post(a.url, "plain").status_code == 200  # no limits: nothing to check
    finally:
        RESTART[url]()  # back, but empty (no persistence)
    assert post(a.url, "limited").status_code in (200, 429)  # checked again
    # The budget key's spend is not forgotten: the first request after the loss finds it
    # missing and restores it from the log (one request may overshoot).
    post(a.url, "budget")
    again = post(a.url, "budget")
    assert again.status_code == 429 and "budget" in again.text


def test_feedback_to_either_replica_teaches_both(replicas):
    """Answered by one replica, scored on the other: both bandits learn, once each."""
    a, b, _, _ = replicas
    prompt = "Which of the two models should answer this very question?"

    def ask(replica) -> dict:
        r = httpx.post(f"{replica.url}/v1/chat/completions", timeout=60, json={
            "model": "learner", "messages": [{"role": "user", "content": prompt}]},
            headers={"authorization": f"Bearer {KEYS['plain']}"})
        assert r.status_code == 200, r.text
        return r.json()

    answer = ask(a)
    assert answer["triage"]["answered_by"] == "ok"  # the prior prefers it
    for _ in range(30):
        scored = httpx.post(f"{b.url}/v1/feedback", timeout=30, json={
            "id": answer["id"], "score": 0.0},
            headers={"authorization": f"Bearer {KEYS['plain']}"}).json()
        assert scored["learned"] is True  # b learns from a's response
        answer = ask(a)  # a learns b's lessons before it routes
        if answer["triage"]["answered_by"] == "backup":
            break
    assert answer["triage"]["answered_by"] == "backup", "a never learned from b's feedback"
    assert ask(b)["triage"]["answered_by"] == "backup"


def test_a_circuit_opened_on_one_replica_opens_on_the_other(replicas):
    a, b, _, _ = replicas

    def circuit(replica) -> str | None:
        state = httpx.get(f"{replica.url}/health", timeout=30, headers={
            "authorization": f"Bearer {KEYS['plain']}"}).json()["circuits"]
        return state.get("broken", {}).get("state")

    for _ in range(3):
        assert post(a.url, "plain", model="broken").status_code == 502
    assert circuit(a) == "open"
    deadline = time.time() + 5
    while circuit(b) != "open" and time.time() < deadline:
        time.sleep(0.2)
    assert circuit(b) == "open"  # b never called it
    refused = post(b.url, "plain", model="broken")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"


def test_the_shared_log_exports_like_a_file(replicas, tmp_path):
    a, b, pg, _ = replicas
    for replica, prompt in ((a, "first"), (b, "second")):
        answer = httpx.post(f"{replica.url}/v1/chat/completions", timeout=30, headers={
            "authorization": f"Bearer {KEYS['plain']}"}, json={
            "model": "ok", "messages": [{"role": "user", "content": prompt}]}).json()
        httpx.post(f"{replica.url}/v1/feedback", json={"id": answer["id"], "score": 1.0},
                   headers={"authorization": f"Bearer {KEYS['plain']}"}, timeout=30)
    out = tmp_path / "scored.csv"
    done = subprocess.run([sys.executable, "-m", "llmtriage.cli", "export", "--log", pg,
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out)
    scored = frame.set_index("prompt")["quality"]
    assert scored["first"] == 1.0 and scored["second"] == 1.0  # one from each replica
    assert scored["hi"] == pytest.approx(0.4)  # the latest of three scores


def test_losing_redis_under_load_fails_closed_and_recovers(replicas):
    """100 clients of a limited key over both replicas; Redis dies, then comes back:
    every request is answered 200 or 503 state_unavailable, none acknowledged is missing
    from the log, and once Redis is back requests are admitted again."""
    a, b, pg, url = replicas
    acknowledged, codes = [], []

    async def load(rounds: int) -> None:
        async with httpx.AsyncClient(timeout=30, headers={
                "authorization": f"Bearer {KEYS['heavy']}"}) as client:
            async def worker(w: int) -> None:
                for i in range(rounds):
                    replica = (a, b)[(w + i) % 2]
                    r = await client.post(f"{replica.url}/v1/chat/completions", json={
                        "model": "sticky", "messages": [
                            {"role": "user", "content": f"redis {w}.{i}"}]})
                    codes.append((r.status_code, r.json().get("error", {}).get("code")))
                    if r.status_code == 200:
                        acknowledged.append(r.json()["id"])

            await asyncio.gather(*(worker(w) for w in range(100)))

    asyncio.run(load(2))
    redis.Redis.from_url(url).shutdown(nosave=True)
    asyncio.run(load(2))
    during = codes[200:]
    RESTART[url]()
    asyncio.run(load(2))
    after = codes[400:]
    assert {c for c, _ in codes[:200]} == {200}, set(codes[:200])
    assert {c for c in during} == {(503, "state_unavailable")}  # fail closed, clearly
    assert {c for c, _ in after} == {200}
    with psycopg.connect(pg) as db:
        logged = {r[0] for r in db.execute("SELECT id FROM requests WHERE status = 200")}
    assert len(acknowledged) == 400 and not set(acknowledged) - logged


def test_killing_a_replica_under_load_loses_no_acknowledged_request(replicas):
    """100 clients over both replicas; one is SIGKILLed: the other keeps serving, and every
    request a client got an answer to is in the shared log. (Runs last: it kills b.)"""
    import signal

    a, b, pg, _ = replicas
    acknowledged, failed_on = [], {"a": 0, "b": 0}

    async def load() -> None:
        async with httpx.AsyncClient(timeout=30, headers={
                "authorization": f"Bearer {KEYS['plain']}"}) as client:
            async def worker(w: int) -> None:
                for i in range(30):
                    name, replica = ("a", a) if (w + i) % 2 else ("b", b)
                    try:
                        r = await client.post(f"{replica.url}/v1/chat/completions", json={
                            "model": "sticky", "messages": [
                                {"role": "user", "content": f"load {w}.{i}"}]})
                    except httpx.HTTPError:
                        failed_on[name] += 1
                        continue
                    assert r.status_code == 200, r.text
                    acknowledged.append(r.json()["id"])

            async def killer() -> None:
                await asyncio.sleep(1.0)
                b.proc.send_signal(signal.SIGKILL)

            await asyncio.gather(killer(), *(worker(w) for w in range(100)))

    asyncio.run(load())
    assert failed_on["a"] == 0 and failed_on["b"] > 0  # only the dead replica's calls failed
    with psycopg.connect(pg) as db:
        logged = {r[0] for r in db.execute("SELECT id FROM requests WHERE status = 200")}
    assert acknowledged and not set(acknowledged) - logged
