"""Client keys, rate limits, budgets, and upstream secrets that never leak."""

from __future__ import annotations

import httpx
import pytest
from servers.processes import gateway, upstream, write_config

from llmtriage.serving.guard import key_hash

SECRET = "sk-upstream-SECRET-7f3a9c"
KEYS = {"fast": "tri-key-fast-0001", "metered": "tri-key-metered-0002", "open": "tri-key-3"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    with upstream() as up:
        config = write_config(tmp / "gateway.toml", up, {
            "ok": {"remote_name": "ok", "api_key": SECRET, "price_in": 1000.0,
                   "price_out": 1000.0},
            "leaky": {"remote_name": "echo-auth", "api_key": SECRET, "max_retries": 0},
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
""")
        assert KEYS["fast"] not in config.read_text()  # only hashes are stored
        with gateway(config, tmp) as g:
            yield g, tmp


def ask(url: str, key: str | None, model: str = "ok") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_requests_need_a_valid_key(gw):
    g, _ = gw
    missing = ask(g.url, None)
    assert missing.status_code == 401 and "missing API key" in missing.json()["error"]["message"]
    wrong = ask(g.url, "tri-not-a-key")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{g.url}/v1/models").status_code == 401
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
    # Each answer costs 9 tokens x $1000 per million = $0.009: the third crosses $0.02.
    codes = [ask(g.url, KEYS["metered"]).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = ask(g.url, KEYS["metered"])
    assert refused.json()["error"]["type"] == "insufficient_quota"


def test_the_budget_survives_a_restart(gw):
    g, tmp = gw
    g.stop()
    with gateway(tmp / "gateway.toml", tmp) as again:
        assert ask(again.url, KEYS["metered"]).status_code == 429
        assert ask(again.url, KEYS["open"]).status_code == 200


def test_upstream_secrets_never_leak(gw):
    _, tmp = gw
    with gateway(tmp / "gateway.toml", tmp) as g:
        r = ask(g.url, KEYS["open"], model="leaky")
        assert r.status_code == 502
        body = r.text
        assert "bad key Bearer ***" in body  # the upstream echoed it; the gateway redacted it
        metrics = httpx.get(f"{g.url}/metrics").text
        health = httpx.get(f"{g.url}/health").text
        g.stop()
        output = g.output()
    stored = (tmp / "requests.sqlite").read_bytes() + b"".join(
        p.read_bytes() for p in tmp.glob("requests.sqlite-*"))
    for where, text in [("response", body), ("metrics", metrics), ("health", health),
                        ("logs", output), ("request log", stored.decode(errors="replace"))]:
        assert SECRET not in text, f"the upstream key leaked into the {where}"
    assert "bad key Bearer ***" in stored.decode(errors="replace")  # the error was logged
