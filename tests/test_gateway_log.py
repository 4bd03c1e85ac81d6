"""The request log, feedback, `triage export`, and a bandit that learns from live feedback."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest
from servers.processes import free_port, gateway, upstream, write_config

from llmtriage.data.loaders import load_table
from llmtriage.policies.routers.knn import KNNRouter

PROMPTS = [f"What is {a} plus {a + 3}?" for a in range(6)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("log")
    # The bandit's prior: 40 prompts on which "a" is right more often than "b".
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        prompt = f"Prior question number {i}: name a colour like {['red', 'blue'][i % 2]}"
        rows += [{"prompt_id": f"p{i}", "prompt": prompt, "model": "a",
                  "quality": float(rng.random() < 0.8), "cost_usd": 0.0},
                 {"prompt_id": f"p{i}", "prompt": prompt, "model": "b",
                  "quality": float(rng.random() < 0.6), "cost_usd": 0.0}]
    pd.DataFrame(rows).to_csv(tmp / "prior.csv", index=False)
    with upstream() as up:
        config = write_config(tmp / "gateway.toml", up, {
            "a": {"remote_name": "ok"}, "b": {"remote_name": "ok"},
        }, extra="""
[gateway]
request_log = "requests.sqlite"
log_text = true

[[policies]]
name = "learner"
kind = "bandit"
table = "prior.csv"
alpha = 0.0
""")
        yield tmp, config


def chat(url: str, model: str, prompt: str, task: str | None = None) -> dict:
    r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": model, "messages": [{"role": "user", "content": prompt}]},
        headers={} if task is None else {"x-triage-task": task})
    assert r.status_code == 200, r.text
    return r.json()


def feedback(url: str, ident: str, score: float) -> httpx.Response:
    return httpx.post(f"{url}/v1/feedback", json={"id": ident, "score": score}, timeout=30)


@pytest.mark.slow
def test_feedback_export_and_retrain(setup):
    tmp, config = setup
    scores = {}
    with gateway(config, tmp) as g:
        for i, prompt in enumerate(PROMPTS):
            for model in ("a", "b"):
                # The first three prompts' requests name their task; the export keeps it.
                answer = chat(g.url, model, prompt, "sums" if i < 3 else None)
                score = float((i + (model == "b")) % 2)
                scores[(prompt, model)] = score
                r = feedback(g.url, answer["id"], score)
                assert r.status_code == 200 and r.json()["logged"] is True
        assert feedback(g.url, "chatcmpl-unknown", 1.0).status_code == 404
        bad = feedback(g.url, answer["id"], 7.0)
        assert bad.status_code == 400 and "score" in bad.json()["error"]["message"]
    out = tmp / "exported.csv"
    done = subprocess.run([sys.executable, "-m", "llmtriage.cli", "export", "--log",
                           str(tmp / "requests.sqlite"), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "12 outcomes (6 prompts, 2 models)" in done.stdout
    table = load_table(f"long:{out}")
    assert sorted(table.models) == ["a", "b"] and table.n_prompts == 6
    for j, prompt in enumerate(table.prompts):
        for k, model in enumerate(table.models):
            assert table.quality[j, k] == scores[(prompt, model)]
    assert (table.latency_ms > 0).all() and (table.tokens_out == 2).all()
    assert sorted(table.tasks[[p in PROMPTS[:3] for p in table.prompts]]) == ["sums"] * 3
    assert "sums" not in table.tasks[[p in PROMPTS[3:] for p in table.prompts]]
    router = KNNRouter(k=1).fit(table)  # production feedback trains a router
    assert router.predict_quality(table.prompts).shape == (6, 2)


def test_export_refuses_a_missing_log(tmp_path):
    done = subprocess.run([sys.executable, "-m", "llmtriage.cli", "export", "--log",
                           str(tmp_path / "nope.sqlite"), "--out", str(tmp_path / "x.csv")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no such file" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("steps, feedback, fault", [
    # Each was a bare "Expecting value" or KeyError line, or a table that failed to load.
    ("not json", 0.5, "request 'r1': its steps are not the gateway's (Invalid JSON"),
    ('[{"model": 5}]', 0.5, "request 'r1': its steps are not the gateway's (0.model: Input "
                            "should be a valid string)"),
    ('[{"model": "m", "confidence": -0.5}]', 7.0, "request 'r1' has feedback 7.0, not a score"),
])
def test_export_names_the_request_a_damaged_log_row_belongs_to(tmp_path, steps, feedback,
                                                               fault):
    from llmtriage.serving.requestlog import RequestLog

    RequestLog(tmp_path / "log.sqlite").close()  # the gateway's schema
    out = tmp_path / "x.csv"
    out.write_text("kept\n")
    with sqlite3.connect(tmp_path / "log.sqlite") as db:
        db.execute("INSERT INTO requests (id, created, policy, status, answered_by, steps, "
                   "cost_usd, feedback) VALUES ('r1', 1.0, 'p', 200, 'm', ?, 0.1, ?)",
                   (steps, feedback))
    done = subprocess.run([sys.executable, "-m", "llmtriage.cli", "export", "--log",
                           str(tmp_path / "log.sqlite"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and fault in said, said
    assert "Traceback" not in said and out.read_text() == "kept\n"


@pytest.mark.slow
def test_the_bandit_learns_from_feedback_and_remembers_it(setup):
    tmp, config = setup
    prompt = "Which of the two models should answer this very question?"
    with gateway(config, tmp) as g:
        first = chat(g.url, "learner", prompt)
        assert first["triage"]["answered_by"] == "a"  # the prior prefers "a"
        answered = [first]
        while answered[-1]["triage"]["answered_by"] == "a" and len(answered) < 30:
            r = feedback(g.url, answered[-1]["id"], 0.0)
            assert r.json()["learned"] is True
            answered.append(chat(g.url, "learner", prompt))
        assert answered[-1]["triage"]["answered_by"] == "b", "never moved off the bad model"
        switched_after = len(answered) - 1
    assert switched_after <= 10
    # Restarted, it replays the logged feedback and starts where it left off.
    with gateway(config, tmp) as g:
        assert chat(g.url, "learner", prompt)["triage"]["answered_by"] == "b"
    db = sqlite3.connect(tmp / "requests.sqlite")
    logged = db.execute("SELECT COUNT(*) FROM requests WHERE policy = 'learner' AND "
                        "feedback = 0").fetchone()[0]
    assert logged == switched_after


@pytest.mark.parametrize("policy, message", [
    ('kind = "cascade-routing"', "a cascade-routing policy is fitted: give 'table'"),
    ('kind = "calibrated-cascade"\ntable = "conf.csv"\nthreshold = 3',
     "threshold is a probability of being right, between 0 and 1, not 3"),
    ('kind = "cascade"', "unknown policy kind 'cascade'"),
    ('kind = "knn"\nartifact = "r.npz"', "give either 'kind'"),
    ('kind = "calibrated-cascade"\ntable = "plain.csv"', "records no confidence to calibrate"),
    ('kind = "cascade-routing"\ntable = "{rb}"', "has no outcomes for any catalog model"),
    ('kind = "cascade-routing"\ntable = "plain.csv"\nmodels = ["nope"]', "no model 'nope'"),
    ('kind = "cascade-routing"\ntable = "conf.csv"\nsignal = "vibes"',
     "unknown confidence signal 'vibes'"),
    ('kind = "calibrated-cascade"\ntable = "conf.csv"\ncolour = "red"',
     "unexpected keyword argument 'colour'"),
    ('artifact = "plain.csv"', "not a Triage policy artifact"),
])
def test_fitted_policy_configs_are_checked_with_a_clear_message(tmp_path, data_dir, policy,
                                                                message):
    routerbench = f"routerbench:{data_dir / 'routerbench'}"
    ladder = ("smollm2-135m", "qwen2.5-coder-0.5b")  # outcomes, but no confidence column
    pd.DataFrame([{"prompt_id": f"q{i}", "prompt": f"question {i}", "model": m,
                   "quality": float((i + j) % 2), "cost_usd": 1e-6 * (j + 1)} for i in range(20)
                  for j, m in enumerate(ladder)]).to_csv(tmp_path / "plain.csv", index=False)
    pd.DataFrame([{"prompt_id": f"q{i}", "prompt": f"question {i}", "model": m,
                   "quality": float((i + j) % 2), "cost_usd": 1e-6 * (j + 1),
                   "confidence": -0.1 * ((i * 7 + j) % 5)} for i in range(20)
                  for j, m in enumerate(ladder)]).to_csv(tmp_path / "conf.csv", index=False)
    config = tmp_path / "gateway.toml"
    config.write_text('[[policies]]\nname = "p"\n' + policy.replace("{rb}", routerbench) + "\n")
    done = subprocess.run([sys.executable, "-m", "llmtriage.cli", "ask", "--config",
                           str(config), "hello"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert message in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr


def test_a_log_from_before_schema_versions_is_migrated_in_place(tmp_path):
    """An existing log keeps its rows and gains the versioned schema's index and task
    column; exported before and after, it reads the same."""
    from llmtriage.serving.logdb import MIGRATIONS
    from llmtriage.serving.requestlog import RequestLog, export_frame

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, created REAL NOT NULL, "
                   "client TEXT, policy TEXT NOT NULL, session TEXT, status INTEGER NOT NULL, "
                   "answered_by TEXT, steps TEXT NOT NULL, cost_usd REAL NOT NULL DEFAULT 0, "
                   "latency_ms REAL, tokens_in INTEGER, tokens_out INTEGER, prompt TEXT, "
                   "answer TEXT, error TEXT, feedback REAL, feedback_at REAL)")
        db.execute("INSERT INTO requests (id, created, client, policy, status, steps, "
                   "cost_usd, answered_by, prompt, feedback) VALUES ('old-1', 1.0, 'k', 'p', "
                   "200, '[]', 0.25, 'm', 'hi', 1.0)")
    # Read as it is (export never writes to a log): no task column, so no tasks.
    assert export_frame(path)["task"].tolist() == [""]
    log = RequestLog(path)
    assert log.spent_by_client() == {"k": 0.25}
    log.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM triage_schema").fetchone()[0] == len(MIGRATIONS)
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = "
                                            "'index'")}
    assert "requests_created" in indexes
    assert export_frame(path)[["model", "quality", "task"]].values.tolist() == [["m", 1.0, ""]]


def log_row(ident: str) -> dict:
    return {"id": ident, "created": 1.0, "client": "k", "policy": "p", "session": None,
            "status": 200, "answered_by": "m", "steps": [{"model": "m", "cost_usd": 0.5}],
            "cost_usd": 0.5, "latency_ms": 2.0, "tokens_in": 3, "tokens_out": 1,
            "prompt": None, "answer": None, "error": None}


def test_a_lone_row_is_committed_on_the_loop_and_a_locked_log_never_stalls_it(tmp_path,
                                                                              monkeypatch):
    """A row arriving while the writer thread is idle is committed at once, before
    record() returns; while another connection holds the write lock, record() still
    returns at once and the writer thread commits the row when the lock is released.
    Rows committed on the loop are checkpointed by the thread, so the write-ahead log does
    not grow without bound."""
    import asyncio
    import time

    from llmtriage.serving import requestlog

    monkeypatch.setattr(requestlog, "CHECKPOINT_EVERY", 10)
    path = tmp_path / "log.sqlite"
    log = requestlog.RequestLog(path)
    reader = sqlite3.connect(path)

    def logged(ident: str) -> bool:
        return reader.execute("SELECT COUNT(*) FROM requests WHERE id = ?",
                              (ident,)).fetchone()[0] == 1

    async def run() -> None:
        done = log.record(log_row("lone"))
        assert done.done() and logged("lone")  # committed before record() returned
        for i in range(200):
            await log.record(log_row(f"r{i}"))
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        began = time.perf_counter()
        waiting = log.record(log_row("while-locked"))
        assert time.perf_counter() - began < 0.1 and not waiting.done()
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the writer thread waits for the lock, the loop does not
        blocker.execute("COMMIT")
        blocker.close()
        await asyncio.wait_for(waiting, 5)
        assert logged("while-locked")

    asyncio.run(run())
    log.close()
    assert reader.execute("SELECT COUNT(*), SUM(cost_usd) FROM requests").fetchone() == (202,
                                                                                       101.0)
    # 201 commits of a row each (at least a page each) in a log checkpointed every 10.
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size < 60 * 4096


def prune_retention_case(where: str, monkeypatch) -> None:
    """Rows past the retention go, a chunk at a time behind the rows being written, and
    every key's spend stays what it was, while the chunks run, after them, after a second
    pruning and after a restart (a carried row is never counted twice)."""
    import asyncio
    import time

    from llmtriage.serving import requestlog
    from llmtriage.serving.logdb import open_database

    monkeypatch.setattr(requestlog, "PRUNE_CHUNK", 7)
    day, now = 86_400.0, time.time()
    rows = [{**log_row(f"old{i}"), "created": now - 3 * day, "client": ["a", "b", None][i % 3],
             "cost_usd": 0.25 * (i + 1)} for i in range(20)]
    rows += [{**log_row(f"new{i}"), "created": now - 0.5 * day} for i in range(4)]
    log = requestlog.RequestLog(where)  # kept for ever: nothing goes

    async def write(log: requestlog.RequestLog, rows: list[dict]) -> None:
        for row in rows:
            await log.record(row)

    asyncio.run(write(log, rows))
    spent = log.spent_by_client()
    log.close()
    assert set(spent) == {"a", "b", "k"} and spent["k"] == 2.0

    reader = open_database(where)

    def ids() -> set[str]:
        return {r[0] for r in reader.execute("SELECT id FROM requests")}

    assert len(ids()) == 24
    log = requestlog.RequestLog(where, retention_s=day)

    async def prune() -> list[dict[str, float]]:
        seen = []
        await log.record({**log_row("trigger"), "created": time.time()})
        deadline = time.monotonic() + 20
        while any(i.startswith("old") for i in ids()) and time.monotonic() < deadline:
            seen.append(await log.spent_now())
        seen.append(await log.spent_now())
        return seen

    during = asyncio.run(prune())
    assert ids() == {f"new{i}" for i in range(4)} | {"trigger"}
    expected = {**spent, "k": spent["k"] + 0.5}  # the trigger row is k's too
    for seen in during:
        assert seen.keys() == expected.keys()
        for client, total in expected.items():
            assert seen[client] == pytest.approx(total)
    assert log.prune() == 0 and log.spent_by_client() == pytest.approx(expected)
    log.close()
    log = requestlog.RequestLog(where, retention_s=day)
    assert log.spent_by_client() == pytest.approx(expected)
    log.close()
    reader.close()


def test_rows_past_the_retention_go_and_their_spend_stays(tmp_path, monkeypatch):
    prune_retention_case(str(tmp_path / "log.sqlite"), monkeypatch)


@pytest.mark.slow
def test_rows_past_the_retention_go_and_their_spend_stays_in_postgres(monkeypatch):
    from servers.processes import postgres_server

    with postgres_server() as url:
        prune_retention_case(url, monkeypatch)


@pytest.mark.parametrize("toml, fault", [
    # Each was accepted: the first two then crashed the server's start with an
    # OverflowError traceback, the others served nonsense energy, prices or token limits.
    ("[gateway]\nkeep_alive_s = inf", "gateway.keep_alive_s: Input should be a finite number"),
    ("[gateway]\nshutdown_timeout_s = 1e300",
     "gateway.shutdown_timeout_s: Input should be less than or equal to 86400"),
    ("watts_per_core = -5.0", "watts_per_core: Input should be greater than 0"),
    ("usd_per_kwh = nan", "usd_per_kwh: Input should be a finite number"),
    ("[gateway]\nmax_tokens = 100000000000", "gateway.max_tokens: Input should be less than"),
    ('[[models]]\nname = "a"\nbackend = "openai"\nendpoint = "http://127.0.0.1:9"\n'
     "price_in = inf", "models.0.price_in: Input should be a finite number"),
    ("[gateway.cache]\nttl_s = nan", "gateway.cache.ttl_s: Input should be a finite number"),
    ("[gateway]\nlog_retention_days = 0.5", "log_retention_days is 0 (keep every row) or at"),
    ('[[policies]]\nname = "p"\nkind = "threshold-cascade"\n'
     'models = ["smollm2-135m", "smollm2-135m"]', "['smollm2-135m'] named twice"),
    # Called (four times) before it failed as "NonHttpUrlClientError":
    ('[[models]]\nname = "a"\nbackend = "openai"\nendpoint = "file:///etc/passwd"',
     "the endpoint must be an http:// or https:// URL with a host"),
    ('[[models]]\nname = "a"\nbackend = "openai"\nendpoint = "localhost:8080/v1"',
     "the endpoint must be an http:// or https:// URL with a host"),
    ('[[models]]\nname = "a"\nbackend = "openai"\nendpoint = "http://127.0.0.1:9/v1"\n'
     "timeout_s = 1e300", "models.0.timeout_s: Input should be less than or equal to 86400"),
    # Served, then every request for it failed inside uvicorn ("Invalid HTTP header
    # value"): names go back in response headers and comma-separated lists.
    ('[[models]]\nname = "a\\nX-Evil: 1"\nbackend = "openai"\n'
     'endpoint = "http://127.0.0.1:9/v1"', "is not a name the gateway can send back"),
    ('[[models]]\nname = "a,b"\nbackend = "openai"\nendpoint = "http://127.0.0.1:9/v1"',
     "models.0.name: Value error, 'a,b' is not a name the gateway can send back"),
    ('[[policies]]\nname = "my policy"\nkind = "single"\nmodel = "smollm2-135m"',
     "policies.0.name: Value error, 'my policy' is not a name the gateway can send back"),
])
def test_a_config_number_out_of_reason_is_refused_naming_it(tmp_path, toml, fault):
    config = tmp_path / "gateway.toml"
    config.write_text(toml + "\n")
    done = subprocess.run([sys.executable, "-m", "llmtriage.cli", "serve", "--config",
                           str(config), "--port", str(free_port())], capture_output=True,
                          text=True, timeout=120)
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and fault in said, said
    assert "Traceback" not in said


@pytest.mark.parametrize("command", [["ask", "hi"], ["collect", "--sample", "1", "--out",
                                                  "{tmp}/out.csv"]])
def test_an_http_models_connections_close_when_its_call_fails(tmp_path, command):
    """ask and collect printed aiohttp's "Unclosed client session" after their error."""
    (tmp_path / "c.toml").write_text('[[models]]\nname = "a"\nbackend = "openai"\n'
                                     f'endpoint = "http://127.0.0.1:{free_port()}/v1"\n'
                                     'max_retries = 0\n')
    name, *rest = [part.format(tmp=tmp_path) for part in command]
    done = subprocess.run([sys.executable, "-m", "llmtriage.cli", name, "--catalog",
                           str(tmp_path / "c.toml"), *rest], capture_output=True, text=True,
                          timeout=120)
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "a: connection failed" in said, said
    assert "Unclosed" not in said and "Traceback" not in said


def test_the_energy_figures_of_a_config_apply_to_the_embedded_ladder_too():
    """Set without [[models]], they were silently ignored."""
    from llmtriage.serving.config import GatewayConfig

    catalog = GatewayConfig(watts_per_core=3.5, usd_per_kwh=0.4).catalog()
    assert (catalog.watts_per_core, catalog.usd_per_kwh) == (3.5, 0.4)
    assert catalog.names() == GatewayConfig().catalog().names()


def test_serve_on_an_address_in_use_says_so_before_it_claims_to_serve():
    """It printed "serving ... on http://127.0.0.1:PORT" and then uvicorn's own error."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "llmtriage.cli", "serve", "--port",
                               str(port)], capture_output=True, text=True, timeout=120)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, said
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in said
    assert "serving" not in said and "Traceback" not in said
