"""The response cache: exact and semantic hits, never across keys or conversations."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import httpx
import numpy as np
import pytest
from servers.processes import gateway, write_config

from llmtriage.serving.cache import CacheSettings, Entry, ResponseCache
from llmtriage.serving.guard import key_hash
from llmtriage.signals.embedder import default_embedder

KEYS = {"a": "tri-key-cache-a-0001", "b": "tri-key-cache-b-0002"}
USER = [{"role": "user", "content": "What is the capital of France?"}]


def entry(cache: ResponseCache, key: str, scope: str, vector=None, answer="Paris") -> Entry:
    return Entry(answer, "m", {"prompt_tokens": 3}, 0.01, 900.0, time.monotonic(), scope,
                 vector)


def test_exact_hits_are_scoped_by_key_policy_limits_and_whole_conversation():
    cache = ResponseCache(CacheSettings(enabled=True))
    key, scope, text = cache.keys("a", "p", 64, USER)
    cache.put(key, scope, entry(cache, key, scope))
    hit, _ = asyncio.run(cache.get(key, scope, text))
    assert hit is not None and hit.match == "exact" and hit.entry.answer == "Paris"
    other_history = [{"role": "user", "content": "Tell me about Spain."},
                     {"role": "assistant", "content": "Spain is in Europe."}, *USER]
    for variant in (cache.keys("b", "p", 64, USER), cache.keys("a", "q", 64, USER),
                    cache.keys("a", "p", 32, USER), cache.keys("a", "p", 64, other_history),
                    cache.keys("a", "p", 64, USER, ("\n",)),  # a stop ends answers early
                    cache.keys("a", "p", 64, USER, task="maths")):  # calibrated by task
        assert variant[0] != key and variant[1] != scope
        assert asyncio.run(cache.get(*variant))[0] is None


def test_entries_expire_and_the_least_recently_used_go_first():
    cache = ResponseCache(CacheSettings(enabled=True, ttl_s=0.2, max_entries=2))
    keys = [cache.keys(None, "p", 8, [{"role": "user", "content": f"q{i}"}]) for i in range(3)]
    for k, s, _ in keys[:2]:
        cache.put(k, s, entry(cache, k, s))
    assert asyncio.run(cache.get(*keys[0]))[0] is not None  # q0 now the most recent
    cache.put(keys[2][0], keys[2][1], entry(cache, keys[2][0], keys[2][1]))
    assert len(cache) == 2
    assert asyncio.run(cache.get(*keys[1]))[0] is None  # evicted
    assert asyncio.run(cache.get(*keys[0]))[0] is not None
    time.sleep(0.3)
    assert asyncio.run(cache.get(*keys[0]))[0] is None  # expired
    assert len(cache) == 1


def test_semantic_hits_need_the_threshold_and_the_same_history():
    cache = ResponseCache(CacheSettings(enabled=True, semantic=True, threshold=0.9),
                          default_embedder())
    key, scope, text = cache.keys("a", "p", 64, USER)
    hit, vector = asyncio.run(cache.get(key, scope, text))
    assert hit is None and vector is not None and np.isclose(np.linalg.norm(vector), 1, 1e-3)
    cache.put(key, scope, entry(cache, key, scope, vector))
    paraphrase = [{"role": "user", "content": "what is the capital city of France?"}]
    hit, _ = asyncio.run(cache.get(*cache.keys("a", "p", 64, paraphrase)))
    assert hit is not None and hit.match == "semantic" and 0.9 <= hit.similarity < 1
    unrelated = [{"role": "user", "content": "How many legs does a spider have?"}]
    assert asyncio.run(cache.get(*cache.keys("a", "p", 64, unrelated)))[0] is None
    # The same paraphrase in another conversation, or from another key: no hit.
    later = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             *paraphrase]
    assert asyncio.run(cache.get(*cache.keys("a", "p", 64, later)))[0] is None
    assert asyncio.run(cache.get(*cache.keys("b", "p", 64, paraphrase)))[0] is None


@pytest.fixture(scope="module")
def gw(up, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    config = write_config(tmp / "gateway.toml", up, {
        "ok": {"remote_name": "ok", "price_in": 2.0, "price_out": 8.0},
    }, extra=f"""
[gateway]
request_log = "requests.sqlite"

[gateway.cache]
enabled = true
semantic = true
threshold = 0.9
ttl_s = 600

[[keys]]
name = "a"
sha256 = "{key_hash(KEYS['a'])}"

[[keys]]
name = "b"
sha256 = "{key_hash(KEYS['b'])}"
""")
    with gateway(config, tmp) as g:
        yield g, tmp


def post(url: str, key: str, messages: list[dict], **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=60,
                      headers={"authorization": f"Bearer {KEYS[key]}"},
                      json={"model": "ok", "messages": messages, **body})


def attempts(up: str, prompt: str) -> int:
    return httpx.get(f"{up}/attempts").json().get(f"ok|{prompt}", 0)


def test_live_hits_cost_nothing_skip_the_upstream_and_are_logged(up, gw):
    g, tmp = gw
    question = [{"role": "user", "content": "cache me: what is 2 + 2?"}]
    first = post(g.url, "a", question)
    assert first.status_code == 200 and "x-triage-cache" not in first.headers
    calls = attempts(up, question[0]["content"])
    second = post(g.url, "a", question)
    assert second.status_code == 200
    assert second.headers["x-triage-cache"] == "exact"
    info = second.json()["triage"]
    assert [s["model"] for s in info["steps"]] == ["cache"] and info["cost_usd"] == 0
    assert info["answered_by"] == "ok"
    assert info["cache"]["saved_usd"] == pytest.approx(first.json()["triage"]["cost_usd"])
    assert second.json()["choices"][0]["message"]["content"] == \
        first.json()["choices"][0]["message"]["content"]
    assert attempts(up, question[0]["content"]) == calls  # the upstream was not called
    # Streamed from the cache.
    streamed = httpx.post(f"{g.url}/v1/chat/completions", timeout=60,
                          headers={"authorization": f"Bearer {KEYS['a']}"},
                          json={"model": "ok", "messages": question, "stream": True})
    events = [json.loads(line[6:]) for line in streamed.text.splitlines()
              if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == first.json()["choices"][0]["message"]["content"]
    assert events[-1]["triage"]["cache"]["match"] == "exact"
    # Another key, another conversation, an opt-out, a sampled answer: all misses.
    assert "x-triage-cache" not in post(g.url, "b", question).headers
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    assert "x-triage-cache" not in post(g.url, "a", [*history, *question]).headers
    assert "x-triage-cache" not in post(g.url, "a", question, triage={"cache": False}).headers
    assert "x-triage-cache" not in post(g.url, "a", question, temperature=0.7).headers
    # A paraphrase is a semantic hit.
    paraphrase = [{"role": "user", "content": "cache me: what's 2 + 2?"}]
    hit = post(g.url, "a", paraphrase)
    assert hit.headers.get("x-triage-cache") == "semantic", hit.json()["triage"]
    metrics = httpx.get(f"{g.url}/metrics",
                        headers={"authorization": f"Bearer {KEYS['a']}"}).text
    assert 'triage_cache_hits_total{match="exact"} 2.0' in metrics
    with sqlite3.connect(tmp / "requests.sqlite") as db:
        steps = db.execute("SELECT steps, cost_usd FROM requests WHERE id = ?",
                           (second.json()["id"],)).fetchone()
    assert json.loads(steps[0])[0]["model"] == "cache" and steps[1] == 0
