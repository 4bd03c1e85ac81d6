"""Client keys, rate limits, budgets, and upstream secrets that never leak."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from servers.processes import gateway, upstream, write_config

from llmtriage.serving.guard import key_hash

SECRET = "sk-upstream-SECRET-7f3a9c"
KEYS = {"fast": "tri-key-fast-0001", "metered": "tri-key-metered-0002", "open": "tri-key-3",
        "burst": "tri-key-burst-0004", "pair": "tri-key-pair-0005"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    with upstream() as up:
        config = write_config(tmp / "gateway.toml", up, {
            "ok": {"remote_name": "ok", "api_key": SECRET, "price_in": 1000.0,
                   "price_out": 1000.0},
            "leaky": {"remote_name": "echo-auth", "api_key": SECRET, "max_retries": 0},
            "slow": {"remote_name": "slow", "max_concurrency": 8},
        }, extra=f"""
[gateway]
request_log = "requests.sqlite"
log_text = true

[[keys]]
name = "fast"
sha256 = "{key_hash(KEYS['fast'])}"
requests_per_minute = 3

[[keys]]
name = "metered"
sha256 = "{key_hash(KEYS['metered'])}"
budget_usd = 0.02

[[keys]]
name = "open"
sha256 = "{key_hash(KEYS['open'])}"

[[keys]]
name = "burst"
sha256 = "{key_hash(KEYS['burst'])}"
budget_usd = 0.05
max_in_flight = 8

[[keys]]
name = "pair"
sha256 = "{key_hash(KEYS['pair'])}"
max_in_flight = 2
""")
        assert KEYS["fast"] not in config.read_text()  # only hashes are stored
        with gateway(config, tmp) as g:
            yield g, tmp


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def ask(url: str, key: str | None, model: str = "ok", max_tokens: int = 1) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers=auth(key) if key else {},
                      timeout=30, json={"model": model, "max_tokens": max_tokens,
                                        "messages": [{"role": "user", "content": "hi"}]})


def spent(tmp, client: str) -> float:
    with sqlite3.connect(tmp / "requests.sqlite") as db:
        return db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE client = ?",
                          (client,)).fetchone()[0]


def test_requests_need_a_valid_key(gw):
    g, _ = gw
    missing = ask(g.url, None)
    assert missing.status_code == 401 and "missing API key" in missing.json()["error"]["message"]
    wrong = ask(g.url, "tri-not-a-key")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{g.url}/v1/models").status_code == 401
    assert httpx.get(f"{g.url}/v1/models/ok").status_code == 401  # names nothing either
    assert httpx.get(f"{g.url}/v1/models/ok", headers=auth(KEYS["open"])).status_code == 200
    assert ask(g.url, KEYS["open"]).status_code == 200
    models = httpx.get(f"{g.url}/v1/models", headers={"authorization": f"Bearer {KEYS['open']}"})
    assert models.status_code == 200


def test_rate_limit_per_key(gw):
    g, _ = gw
    codes = [ask(g.url, KEYS["fast"]).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    limited = ask(g.url, KEYS["fast"])
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert ask(g.url, KEYS["open"]).status_code == 200  # other keys are not affected


def test_budget_per_key(gw):
    g, _ = gw
    # Each answer costs 9 tokens x $1000 per million = $0.009; admission reserves the most a
    # request may cost ((2 + 8 prompt bytes + 1 max token) x $1000 per million = $0.011), so
    # the third, which could end above $0.02, is refused before it runs.
    codes = [ask(g.url, KEYS["metered"]).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]
    refused = ask(g.url, KEYS["metered"])
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert "may cost up to" in refused.json()["error"]["message"]
    assert ask(g.url, KEYS["metered"], max_tokens=500).status_code == 429


def test_concurrent_requests_cannot_overshoot_a_budget(gw):
    g, tmp = gw
    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(lambda _: ask(g.url, KEYS["burst"]).status_code, range(50)))
    assert codes.count(200) >= 4 and set(codes) <= {200, 429}
    # Every row is logged before its answer goes out (without reservations: $0.65).
    assert spent(tmp, "burst") <= 0.05 + 1e-9


@pytest.mark.slow
def test_a_key_runs_at_most_its_max_in_flight(gw):
    g, _ = gw
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: ask(g.url, KEYS["pair"], model="slow"), range(6)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [200, 200, 429, 429, 429, 429]  # slow answers in 1.5 s: 2 at a time
    assert {r.json()["error"]["code"] for r in replies if r.status_code == 429} == \
        {"concurrency_exceeded"}
    assert ask(g.url, KEYS["pair"], model="slow").status_code == 200  # slots came back


def test_health_metrics_and_schema_need_a_key(gw):
    g, _ = gw
    assert httpx.get(f"{g.url}/health").json() == {"status": "ok"}  # liveness, nothing named
    assert "models" in httpx.get(f"{g.url}/health", headers=auth(KEYS["open"])).json()
    for endpoint in ("/metrics", "/openapi.json", "/docs"):
        assert httpx.get(f"{g.url}{endpoint}").status_code == 401, endpoint
        assert httpx.get(f"{g.url}{endpoint}", headers=auth(KEYS["open"])).status_code == 200


def test_the_budget_and_the_rate_window_survive_a_restart(gw):
    g, tmp = gw
    g.stop()
    with gateway(tmp / "gateway.toml", tmp) as again:
        assert ask(again.url, KEYS["metered"]).status_code == 429
        # "fast" made 3 requests within the last minute: still over its limit.
        limited = ask(again.url, KEYS["fast"])
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert ask(again.url, KEYS["open"]).status_code == 200


def test_upstream_secrets_never_leak(gw):
    _, tmp = gw
    with gateway(tmp / "gateway.toml", tmp) as g:
        r = ask(g.url, KEYS["open"], model="leaky")
        assert r.status_code == 502
        body = r.text
        assert "bad key Bearer ***" in body  # the upstream echoed it; the gateway redacted it
        metrics = httpx.get(f"{g.url}/metrics", headers=auth(KEYS["open"])).text
        health = httpx.get(f"{g.url}/health", headers=auth(KEYS["open"])).text
        g.stop()
        output = g.output()
    stored = (tmp / "requests.sqlite").read_bytes() + b"".join(
        p.read_bytes() for p in tmp.glob("requests.sqlite-*"))
    for where, text in [("response", body), ("metrics", metrics), ("health", health),
                        ("logs", output), ("request log", stored.decode(errors="replace"))]:
        assert SECRET not in text, f"the upstream key leaked into the {where}"
    assert "bad key Bearer ***" in stored.decode(errors="replace")  # the error was logged


@pytest.mark.slow
def test_a_failed_log_write_loses_no_spend(gw):
    _, tmp = gw
    journal = tmp / "requests.sqlite.spend.jsonl"
    with gateway(tmp / "gateway.toml", tmp) as g:
        before = spent(tmp, "open")
        lock = sqlite3.connect(tmp / "requests.sqlite", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the database: writes fail
        try:
            assert [ask(g.url, KEYS["open"]).status_code for _ in range(2)] == [200, 200]
            deadline = time.time() + 20
            while time.time() < deadline and (
                    not journal.exists() or len(journal.read_text().splitlines()) < 2):
                time.sleep(0.2)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert len(journal.read_text().splitlines()) == 2
        metrics = httpx.get(f"{g.url}/metrics", headers=auth(KEYS["open"])).text
        assert "triage_log_errors_total 4.0" in metrics  # each row: whole, then trimmed
        g.stop()
        assert "writing request" in g.output()  # surfaced, once
    with gateway(tmp / "gateway.toml", tmp):
        pass  # a restart folds the journal back into the log
    assert not journal.exists()
    assert spent(tmp, "open") == pytest.approx(before + 2 * 0.009)


def test_a_budget_counts_requests_the_log_no_longer_holds(tmp_path):
    """The log keeps rows for 90 days by default; older ones are removed once the gateway
    serves, and their spend is carried over: a key that spent its budget 100 days ago is
    still refused, then and after a restart."""
    from llmtriage.serving.requestlog import RequestLog

    path = tmp_path / "requests.sqlite"
    RequestLog(path).close()  # the schema
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO requests (id, created, client, policy, status, steps, cost_usd)"
                   " VALUES ('long-ago', ?, 'spent', 'ok', 200, '[]', 0.02)",
                   (time.time() - 100 * 86_400,))
    with upstream() as up:
        config = write_config(tmp_path / "gateway.toml", up, {
            "ok": {"remote_name": "ok", "price_in": 1000.0, "price_out": 1000.0}},
            extra=f"""
[gateway]
request_log = "requests.sqlite"

[[keys]]
name = "spent"
sha256 = "{key_hash(KEYS['metered'])}"
budget_usd = 0.025

[[keys]]
name = "open"
sha256 = "{key_hash(KEYS['open'])}"
""")
        for _ in range(2):
            with gateway(config, tmp_path) as g:
                refused = ask(g.url, KEYS["metered"])
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["type"] == "insufficient_quota"
                assert ask(g.url, KEYS["open"]).status_code == 200
                deadline = time.monotonic() + 10
                while spent(tmp_path, "spent") > 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert spent(tmp_path, "spent") == 0  # the row is gone
