"""The generic long format: round trips, an unseen 9-model file, and clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from servers.processes import free_port

from llmtriage.data import DataError, PriceCatalog, load_table
from llmtriage.data.loaders import generic, llmrouter


@pytest.fixture(scope="module")
def llmrouter_table(data_dir):
    return llmrouter.load(data_dir / "llmrouter")


def unseen_nine_model_file(table, path, seed: int = 7) -> pd.DataFrame:
    """A long-format log the project has never seen: LLMRouter's real 9-model outcomes on
    its test prompts, renamed, with per-call cost, latency and a logprob-style confidence
    (a mean answer-token logprob that is higher, on average, when the answer is right)."""
    rng = np.random.default_rng(seed)
    test = table.split("test")
    n, m = test.quality.shape
    logprob = np.log(np.clip(0.35 + 0.5 * test.quality + rng.normal(0, 0.15, (n, m)),
                             1e-3, 1.0))
    latency = rng.gamma(4.0, 60.0, (n, m)) * (1 + np.arange(m))
    rows = pd.DataFrame({
        "prompt_id": np.repeat([f"ticket-{i:05d}" for i in range(n)], m),
        "prompt": np.repeat(test.prompts, m),
        "model": np.tile([f"acme-{j}-{x}" for j, x in enumerate(test.models)], n),
        "quality": test.quality.reshape(-1),
        "cost_usd": test.cost_usd.reshape(-1),
        "latency_ms": latency.reshape(-1),
        "confidence": logprob.reshape(-1),
        "split": np.repeat(np.where(rng.random(n) < 0.5, "train", "test"), m),
    })
    rows = rows.sample(frac=1.0, random_state=seed)  # logs arrive in any order
    if path.suffix == ".csv":
        rows.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        rows.to_json(path, orient="records", lines=True)
    else:
        rows.to_parquet(path)
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_unseen_nine_model_log_loads(llmrouter_table, tmp_path, suffix):
    path = tmp_path / f"support-bot{suffix}"
    rows = unseen_nine_model_file(llmrouter_table, path)
    table = load_table(str(path))
    assert table.n_models == 9 and table.n_prompts == rows["prompt_id"].nunique()
    for col in ("cost_usd", "latency_ms", "confidence"):
        assert table.has(col)
    # Every outcome landed in its own cell despite the shuffled rows.
    pick = rows.iloc[123]
    i = list(table.prompt_ids).index(pick["prompt_id"])
    j = table.model_index(pick["model"])
    assert table.quality[i, j] == pytest.approx(pick["quality"])
    assert table.latency_ms[i, j] == pytest.approx(pick["latency_ms"])


@pytest.mark.slow
def test_unseen_log_benches_from_the_command_line(llmrouter_table, tmp_path):
    path = tmp_path / "support-bot.csv"
    unseen_nine_model_file(llmrouter_table, path)
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "llmtriage.cli", "bench", str(path), "--json", str(out),
         "--plot", str(tmp_path / "report.png"), "--bootstrap", "100"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    records = pd.read_json(out)
    assert set(records["family"]) == {"single", "oracle", "random", "calibrated-cascade"}
    cascade = records[records["family"] == "calibrated-cascade"]
    assert len(cascade) > 5 and cascade["latency_ms"].notna().all()
    # A cascade pays its models in sequence: its dearest point costs more than one model.
    assert cascade["calls_per_query"].max() > 1.5
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_study_written_with_family_names_runs_the_kinds_they_stand_for(llmrouter_table,
                                                                        tmp_path):
    """Issue 13's study line names families (``-p cascade -p router --router mlp``): it
    used to end at "unknown policy kind 'cascade'"."""
    path = tmp_path / "support-bot.csv"
    unseen_nine_model_file(llmrouter_table, path)
    out = tmp_path / "study.json"
    run = subprocess.run(
        [sys.executable, "-m", "llmtriage.cli", "bench", str(path), "-p", "single", "-p",
         "oracle", "-p", "random", "-p", "cascade", "-p", "router", "-p", "cascade-routing",
         "--router", "mlp", "--param", "mlp.embedder=hashing", "--bootstrap", "0",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    said = " ".join(run.stdout.split())
    assert run.returncode == 0, run.stderr
    assert "-p cascade: ran calibrated-cascade" in said and "-p router: ran mlp" in said
    records = pd.read_json(out)
    assert set(records["family"]) == {"single", "oracle", "random", "calibrated-cascade",
                                      "mlp", "cascade-routing"}
    routing = records[records["family"] == "cascade-routing"]
    assert len(routing) > 1 and routing["calls_per_query"].max() > 1


def test_router_kinds_are_read_once_without_spaces():
    """Cascade routing took --router's first name unstripped: ' mlp' was no kind."""
    from llmtriage.cli.replay import family_shorthands, router_kinds

    routers = router_kinds(" mlp, knn ")
    assert routers == ("mlp", "knn")
    assert family_shorthands(["cascade-routing", "router"], routers) == (
        ["cascade-routing", "mlp", "knn"], ["-p router: ran mlp, knn"])
    assert family_shorthands(["cascade", "router"], router_kinds(None)) == (
        ["calibrated-cascade", "knn", "logistic"],
        ["-p cascade: ran calibrated-cascade", "-p router: ran knn, logistic"])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_round_trip(data_dir, tmp_path, suffix):
    table = load_table(str(data_dir / "arena_bench_v1"))
    path = generic.write(table, tmp_path / f"arena{suffix}")
    back = load_table(str(path))
    assert back.models == table.models
    np.testing.assert_array_equal(back.prompt_ids, table.prompt_ids)
    np.testing.assert_allclose(back.quality, table.quality)
    np.testing.assert_allclose(back.cost_usd, table.cost_usd)
    np.testing.assert_array_equal(back.splits, table.splits)


def write_csv(tmp_path, text: str):
    path = tmp_path / "log.csv"
    path.write_text(text)
    return path


BAD = {
    "missing column": ("prompt_id,model\np1,a\n", "missing required column"),
    "NaN quality": ("prompt_id,model,quality,cost_usd\np1,a,,0.1\n", "quality is missing"),
    "out of range": ("prompt_id,model,quality,cost_usd\np1,a,7,0.1\n",
                     "must lie in \\[0, 1\\]; data row 1 has 7 "),
    "not a number": ("prompt_id,model,quality,cost_usd\np1,a,good,0.1\n", "non-number 'good'"),
    "duplicate": ("prompt_id,model,quality,cost_usd\np1,a,1,0.1\np1,a,0,0.1\n", "two rows"),
    "hole": ("prompt_id,model,quality,cost_usd\np1,a,1,.1\np1,b,1,.1\np2,a,0,.1\n",
             "missing, first: prompt 'p2', model 'b'"),
    "unknown model": ("prompt_id,prompt,model,quality,response\np1,hi,my-model,1,hello\n",
                      "no price known for model\\(s\\) 'my-model'"),
    "negative cost": ("prompt_id,model,quality,cost_usd\np1,a,1,-0.1\n", "negative"),
    # Each of these was accepted silently (or a traceback):
    "infinite cost": ("prompt_id,model,quality,cost_usd\np1,a,1,inf\np1,b,0,.2\n",
                      "cost_usd is infinite at prompt 'p1', model 'a'"),
    "no model": ("prompt_id,model,quality,cost_usd\np1,,1,.1\np1,b,0,.2\n",
                 "model is missing in data row 1"),
    "unknown split": ("prompt_id,model,quality,cost_usd,split\np1,a,1,.1,validation\n",
                      "split must be 'train' or 'test'.*'validation'"),
    "two splits": ("prompt_id,model,quality,cost_usd,split\np1,a,1,.1,train\np1,b,0,.2,test\n",
                   "prompt 'p1' has rows with different splits"),
    "two tasks": ("prompt_id,model,quality,cost_usd,task\np1,a,1,.1,x\np1,b,0,.2,y\n",
                  "prompt 'p1' has rows with different tasks"),
    # Two prompts sharing an id (files concatenated) were merged into one, silently.
    "two prompts": ("prompt_id,prompt,model,quality,cost_usd\np1,hi,a,1,.1\np1,yo,b,0,.2\n",
                    "prompt 'p1' has rows with different prompts \\['hi', 'yo'\\]"),
    "header only": ("prompt_id,prompt,model,quality\n", "no data rows"),
    "column twice": ("prompt_id,model,quality,Quality\np1,a,1,1\n", "given twice"),
    # A measure under another name was left unread: costs were derived from the price
    # catalog instead, latencies dropped.
    "cost named cost": ("prompt_id,model,quality,cost\np1,a,1,.1\n",
                        "column 'cost' is not read: did you mean 'cost_usd'"),
    "latency in seconds": ("prompt_id,model,quality,cost_usd,latency_s\np1,a,1,.1,2\n",
                           "column 'latency_s' is not read: did you mean 'latency_ms'"),
    "misspelt confidence": ("prompt_id,model,quality,cost_usd,confidense\np1,a,1,.1,.5\n",
                            "did you mean 'confidence'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_get_clear_errors(tmp_path, case):
    text, message = BAD[case]
    with pytest.raises(DataError, match=message):
        load_table(str(write_csv(tmp_path, text)))


def test_values_that_are_not_text_or_numbers_are_refused_not_stringified(tmp_path):
    """An object as a JSON line's prompt was stringified into "{'text': 'x'}" and routed
    on; a Parquet date as cost_usd was read as its nanoseconds ($0 here); Parquet bytes that
    are not UTF-8 gave a bare UnicodeDecodeError naming no file."""
    rows = [{"prompt_id": f"p{i}", "prompt": f"question {i}", "model": m,
             "quality": float((i + j) % 2), "cost_usd": 0.1 * (j + 1)}
            for i in range(4) for j, m in enumerate("ab")]
    lines = tmp_path / "log.jsonl"
    lines.write_text("".join(json.dumps({**r, "prompt": {"text": r["prompt"]}}) + "\n"
                             for r in rows))
    with pytest.raises(DataError, match=r"column 'prompt' has a non-text value "
                                        r"\{'text': 'question 0'\} \(data row 1\)"):
        load_table(str(lines))
    frame = pd.DataFrame(rows)
    for bad, says in [
        (frame.assign(cost_usd=pd.Timestamp(0)), "column 'cost_usd' holds datetime64"),
        (frame.assign(prompt=[b"\xff\xfe " + p.encode() for p in frame["prompt"]]),
         "column 'prompt' has bytes that are not UTF-8 text (data row 1)"),
    ]:
        bad.to_parquet(tmp_path / "bad.parquet")
        with pytest.raises(DataError, match=f"bad.parquet: {re.escape(says)}"):
            load_table(str(tmp_path / "bad.parquet"))
    utf8 = frame.assign(prompt=[p.encode() for p in frame["prompt"]])
    utf8.to_parquet(tmp_path / "bytes.parquet")  # text stored as Parquet binary reads
    assert load_table(str(tmp_path / "bytes.parquet")).prompts[0] == "question 0"


def test_cli_reports_bad_input_without_traceback(tmp_path):
    path = write_csv(tmp_path, BAD["out of range"][0])
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", "bench", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "error:" in run.stderr and "Traceback" not in run.stderr + run.stdout


def test_columns_unlike_the_formats_are_left_unread(tmp_path):
    """A file's own columns (and a second latency beside latency_ms) are its metadata."""
    path = write_csv(tmp_path, "prompt_id,model,quality,cost_usd,latency_ms,latency_p99,source\n"
                               "p1,a,1,.1,5,9,x\np1,b,0,.2,6,9,y\n")
    assert load_table(str(path)).latency_ms.tolist() == [[5.0, 6.0]]


def test_column_names_and_splits_are_read_without_case_or_spaces(tmp_path):
    path = write_csv(tmp_path, " Prompt_ID ,MODEL, Quality ,cost_usd,Split\n"
                               "p1,a,1,.1, Test\np1,b,0,.2,TEST\n"
                               "p2,a,0,.1,train\np2,b,1,.2,train\n")
    table = load_table(str(path))
    assert list(table.models) == ["a", "b"] and list(table.splits) == ["test", "train"]


def test_a_sparse_file_is_refused_from_its_rows_not_a_dense_mask(tmp_path):
    """200,000 rows, each prompt with its own model: 4e10 (prompt, model) pairs, which a
    dense mask of the missing ones tried to allocate (a MemoryError traceback)."""
    n = 200_000
    ids = np.arange(n).astype(str)
    path = tmp_path / "sparse.csv"
    pd.DataFrame({"prompt_id": np.char.add("p", ids), "model": np.char.add("m", ids),
                  "quality": 1.0, "split": "train"}).to_csv(path, index=False)
    with pytest.raises(DataError, match=f"{(n * n - n)} missing, first: prompt 'p0', "
                                        "model 'm1'"):
        load_table(str(path))


def test_unknown_model_priced_by_user_file(tmp_path):
    path = write_csv(tmp_path, BAD["unknown model"][0])
    prices = tmp_path / "prices.csv"
    prices.write_text("model,input,output\nmy-model,1.0,2.0\n")
    table = load_table(str(path), prices=PriceCatalog.from_file(prices))
    # "hi" is 2 characters (0.5 tokens) in, "hello" 5 characters (1.25 tokens) out.
    assert table.cost_usd[0, 0] == pytest.approx((0.5 * 1.0 + 1.25 * 2.0) / 1e6)
    assert any("my-model: $1 in / $2 out" in n for n in table.notes)


@pytest.mark.parametrize("name, text", [
    ("prices.csv", "\ufeffmodel,input,output\r\nmy-model,1.0,2.0\r\n"),  # Excel's CSV UTF-8
    ("prices.json", '\ufeff{"as_of": "2026-11-01", "models": {"my-model": {"input": 1.0, '
                    '"output": 2.0}}}'),
])
def test_a_spreadsheets_price_file_is_read_and_dated_by_its_own_date_alone(tmp_path, name,
                                                                           text):
    """A byte-order mark hid the first column ("lacks columns ['model']"); and every price a
    report named, the user's own included, was dated by the built-in table's date."""
    path = write_csv(tmp_path, BAD["unknown model"][0])
    (tmp_path / name).write_text(text, encoding="utf-8")
    table = load_table(str(path), prices=PriceCatalog.from_file(tmp_path / name))
    assert table.cost_usd[0, 0] == pytest.approx((0.5 * 1.0 + 1.25 * 2.0) / 1e6)
    [note] = [n for n in table.notes if n.startswith("price my-model")]
    assert note.endswith(f"{name} (as of 2026-11-01)" if name.endswith(".json") else name)


def test_text_files_saved_with_a_byte_order_mark_read_as_without(tmp_path):
    """Notepad and spreadsheets save UTF-8 with a byte-order mark; a JSON lines table, a
    gateway config and a prompt set were each refused for it (position 0, line 1)."""
    from llmtriage.probes import load_probes
    from llmtriage.serving.config import load_gateway_config

    rows = [{"prompt_id": f"p{i}", "model": m, "quality": float((i + j) % 2),
             "cost_usd": 0.1 * (j + 1), "prompt": f"question {i}"}
            for i in range(4) for j, m in enumerate("ab")]
    lines = "\n".join(json.dumps(r) for r in rows) + "\n"
    config = '[gateway]\nmax_in_flight = 3\n'
    probes = json.dumps({"id": "q1", "question": "2+2?", "answer": "4"}) + "\n"
    read = {}
    for mark in ("", "\ufeff"):
        for name, text in (("t.jsonl", lines), ("g.toml", config), ("p.jsonl", probes)):
            (tmp_path / name).write_text(mark + text, encoding="utf-8")
        table = load_table(str(tmp_path / "t.jsonl"))
        read[mark] = (table.prompt_ids.tolist(), table.quality.tolist(),
                      load_gateway_config(tmp_path / "g.toml").gateway.max_in_flight,
                      load_probes(str(tmp_path / "p.jsonl"))[0].answer)
    assert read["\ufeff"] == read[""] and read[""][2:] == (3, "4")


def test_a_price_file_separated_by_semicolons_is_refused_saying_so(tmp_path):
    (tmp_path / "p.csv").write_text("model;input;output\nm-1;1,0;2,0\n")
    with pytest.raises(DataError, match="separated by ';'"):
        PriceCatalog.from_file(tmp_path / "p.csv")


def test_failed_write_keeps_the_good_file(data_dir, tmp_path):
    table = load_table(str(data_dir / "arena_bench_v1"))
    path = generic.write(table, tmp_path / "arena.csv")
    before = path.read_bytes()
    broken = table.with_notes()
    object.__setattr__(broken, "quality", table.quality[:, :1])  # wrong shape: write fails
    with pytest.raises(ValueError):
        generic.write(broken, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["arena.csv"]


@pytest.mark.parametrize(("name", "text", "fault"), [
    ("p.csv", "model,input,output\nm-1,-1,2\n", "model 'm-1': input: Input should be greater"),
    ("p.csv", "model,input,output\nm-1,nan,2\n", "model 'm-1': input: Input should be a finite"),
    ("p.csv", "model,input,output\nm-1,abc,2\n", "model 'm-1': input: Input should be a valid"),
    ("p.json", "[1, 2]", "Input should be a valid dictionary"),  # a traceback before
    ("p.json", '{"models": {"m-1": {"input": 1}}}', "model 'm-1': output: Field required"),
    # The second of two prices silently won:
    ("p.csv", "model,input,output\nm-1,1,2\nm-1,3,4\n", "['m-1'] priced twice"),
    ("p.json", '{"models": {"m-1": {"input": 1, "output": 2}, "m-1": {"input": 3, '
               '"output": 4}}}', "['m-1'] given twice in one object"),
    ("p.csv", "model,input,output\n,1,2\n", "row 2 has no model name"),
])
def test_a_bad_price_is_refused_naming_its_model(tmp_path, name, text, fault):
    """A negative or NaN price was taken as given, and would have priced every call."""
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=re.escape(fault)):
        PriceCatalog.from_file(tmp_path / name)


def test_price_lookup_folds_provider_spellings():
    catalog = PriceCatalog.default()
    assert catalog.lookup("mistralai/Mixtral-8x7B-Instruct-v0.1") is not None
    assert catalog.lookup("Llama-3.1-405B-Inst@sambanova") == catalog.lookup(
        "llama-3.1-405b-inst")
    assert catalog.lookup("no-such-model") is None


def test_a_providers_undated_alias_is_priced_as_its_latest_snapshot_and_says_so(tmp_path):
    """A log naming gpt-4o or claude-3-haiku (the names the providers' APIs take) had no
    price: the catalog lists dated snapshots alone."""
    catalog = PriceCatalog.default()
    assert catalog.lookup("openai/GPT-4o").input == catalog.lookup("gpt-4o-2024-08-06").input
    assert catalog.lookup("anthropic/claude-3-5-sonnet-latest").source.endswith(
        "listed as claude-3-5-sonnet-20240620")
    assert catalog.lookup("gpt-4") is None  # no snapshot date to fold: gpt-4-0314 is not one
    # A user's newer snapshot is the alias's price.
    prices = tmp_path / "prices.csv"
    prices.write_text("model,input,output\ngpt-4o-2026-01-01,9,9\n")
    mine = PriceCatalog.default_with(PriceCatalog.from_file(prices))
    assert mine.lookup("gpt-4o").input == 9
    path = write_csv(tmp_path, "prompt_id,model,quality,tokens_in,tokens_out\n"
                               "p1,gpt-4o,1,1000,100\np1,gpt-4o-mini,0,1000,100\n")
    table = load_table(str(path))
    assert table.cost_usd[0].tolist() == pytest.approx([(2.5e3 + 1e3) / 1e6,
                                                        (150 + 60) / 1e6])
    assert any(n.startswith("price gpt-4o:") and "listed as gpt-4o-2024-08-06" in n
               for n in table.notes)


def test_litellms_price_map_is_a_price_file(tmp_path):
    """LiteLLM's model_prices_and_context_window.json (USD per token, beside its sample_spec
    and entries priced per pixel) was refused: "models: Field required"."""
    prices = tmp_path / "model_prices_and_context_window.json"
    prices.write_text(json.dumps({
        "sample_spec": {"max_tokens": "LEGACY parameter", "input_cost_per_token": 0.0,
                        "output_cost_per_token": 0.0, "mode": "one of chat, embedding"},
        "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                   "litellm_provider": "openai", "mode": "chat"},
        "dall-e-3": {"input_cost_per_pixel": 2.4414e-07, "mode": "image_generation"},
        "my-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}))
    catalog = PriceCatalog.from_file(prices)
    assert set(catalog.prices) == {"gpt-4o", "my-model"}
    assert (catalog.prices["gpt-4o"].input, catalog.prices["gpt-4o"].output) == (2.5, 10.0)
    path = write_csv(tmp_path, BAD["unknown model"][0])
    table = load_table(str(path), prices=catalog)
    assert table.cost_usd[0, 0] == pytest.approx((0.5 * 1.0 + 1.25 * 2.0) / 1e6)
    assert any(n.startswith("price my-model") and "LiteLLM's price map" in n
               for n in table.notes)
    prices.write_text(json.dumps({"gpt-4o": {"input_cost_per_token": -1e-06,
                                             "output_cost_per_token": 1e-05}}))
    with pytest.raises(DataError, match="model 'gpt-4o'"):
        PriceCatalog.from_file(prices)


def test_columns_other_tools_write_are_read_as_the_ones_they_name(tmp_path):
    """OpenAI's usage names and a confidence named by its statistic were left unread: the
    cost was priced from text lengths, and no cascade could be fitted."""
    path = write_csv(tmp_path, "prompt_id,model,quality,prompt_tokens,completion_tokens,"
                               "Mean_Logprob\np1,gpt-4o,1,1000,100,-0.1\n"
                               "p1,gpt-4o-mini,0,1000,100,-0.9\n")
    table = load_table(str(path))
    assert table.tokens_in[0].tolist() == [1000, 1000]
    assert table.confidence[0].tolist() == [-0.1, -0.9]
    assert table.confidence_signal == "mean_logprob"
    assert "column 'prompt_tokens' read as 'tokens_in'" in table.notes
    # Where the file has the column itself, the other is left unread.
    path = write_csv(tmp_path, "prompt_id,model,quality,cost_usd,confidence,min_logprob\n"
                               "p1,a,1,.1,-0.5,-3\np1,b,0,.2,-0.6,-4\n")
    table = load_table(str(path))
    assert table.confidence[0].tolist() == [-0.5, -0.6] and table.confidence_signal is None
    path = write_csv(tmp_path, "prompt_id,model,quality,cost_usd,prompt_tokens,input_tokens\n"
                               "p1,a,1,.1,5,6\n")
    with pytest.raises(DataError, match="'prompt_tokens' and 'input_tokens' both name "
                                        "'tokens_in'"):
        load_table(str(path))
    # A prompt's text under another tool's name is not guessed at, but named.
    path = write_csv(tmp_path, "prompt_id,model,quality,cost_usd,Question\n"
                               "p1,a,1,.1,hi\np1,b,0,.2,hi\n")
    [note] = [n for n in load_table(str(path)).notes if n.startswith("no prompt text")]
    assert note.endswith("column 'question' was left unread: name it 'prompt'")


DEEP_JSON = "[" * 100_000 + "]" * 100_000
NOT_UTF8 = b"\xff\xfe\x00 not text"


@pytest.mark.parametrize("case", ["config deep", "config binary", "prices deep", "probes deep",
                                  "probes binary", "llmrouter deep", "llmrouter binary",
                                  "long binary"])
def test_files_nested_past_reading_or_not_text_get_one_clear_line(data_dir, tmp_path, case):
    """Each was a RecursionError or UnicodeDecodeError traceback."""
    what, kind = case.split()
    deep = ("x = " + DEEP_JSON + "\n") if what == "config" else DEEP_JSON
    body = deep.encode() if kind == "deep" else NOT_UTF8
    source = str(write_csv(tmp_path, "prompt_id,model,quality,cost_usd\np1,a,1,0.1\n"))
    if what == "config":
        (tmp_path / "c.toml").write_bytes(body)
        args = ["ask", "--config", str(tmp_path / "c.toml"), "hi"]
    elif what == "prices":
        (tmp_path / "p.json").write_bytes(body)
        args = ["bench", source, "--prices", str(tmp_path / "p.json")]
    elif what == "long":  # a CSV of bytes: its format was sniffed as text, unchecked
        (tmp_path / "bytes.csv").write_bytes(body)
        args = ["bench", str(tmp_path / "bytes.csv")]
    elif what == "probes":
        (tmp_path / "p.jsonl").write_bytes(body)
        args = ["collect", "--probes", str(tmp_path / "p.jsonl"), "--out",
                str(tmp_path / "out.csv")]
    else:
        for name in ("dcrouter_train.json", "dcrouter_test.json"):
            (tmp_path / name).write_bytes(body)
        (tmp_path / "default_llm.json").write_text("{}")
        args = ["bench", f"llmrouter:{tmp_path}"]
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", *args],
                         capture_output=True, text=True, timeout=120)
    said = " ".join((run.stderr + run.stdout).split())
    assert run.returncode == 2, said
    assert "Traceback" not in said and "Error:" not in said.replace("error:", "")
    assert ("nested" in said) if kind == "deep" else ("UTF-8" in said or "utf-8" in said), said
    if what == "long":
        assert "bytes.csv: cannot read as csv" in said, said


@pytest.mark.parametrize("args, says", [
    (["report", "{src}", "--out", "{blocked}/report"], "cannot create the output folder"),
    (["fit", "{src}", "-p", "knn", "--out", "{blocked}/p.npz"], "cannot create the output"),
    (["fit", "{src}", "-p", "knn", "--out", "{tmp}"], "is a folder; name a file"),
    (["convert", "{src}", "{blocked}/t.csv"], "cannot create the output folder"),
    (["bench", "{src}", "--plot", "{blocked}/p.png"], "cannot create the output folder"),
    (["bench", "{src}", "--plot", "{tmp}/p.txt"], "a plot is written as png, svg, pdf"),
])
def test_an_output_that_cannot_be_written_fails_before_the_work(tmp_path, args, says):
    """Each used to run its whole job (a report: minutes) and then fail, or print a
    traceback."""
    source = write_csv(tmp_path, "prompt_id,model,quality,cost_usd\np1,a,1,0.1\np1,b,0,0.2\n")
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where a folder is wanted")
    filled = [a.format(src=source, blocked=blocked, tmp=tmp_path) for a in args]
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", *filled],
                         capture_output=True, text=True, timeout=120)
    said = " ".join((run.stderr + run.stdout).split())
    assert run.returncode == 2 and says in said and "Traceback" not in said, said
    assert time.perf_counter() - started < 20


@pytest.mark.parametrize("args", [
    ["convert", "{src}", "{src}"],  # replaced a recording with the columns the format keeps
    ["convert", "long:{tmp}/./log.csv", "{src}"],  # the same file, spelt another way
    ["convert", "{src}", "{tmp}/out.csv", "--prices", "{tmp}/out.csv"],
    ["bench", "{src}", "--json", "{src}"],  # replaced the data with the run's JSON
    ["bench", "{src}", "--plot", "{tmp}/prices.csv", "--prices", "{tmp}/prices.csv"],
    ["collect", "--probes", "{tmp}/probes.jsonl", "--out", "{tmp}/probes.jsonl"],
    ["export", "--log", "{tmp}/requests.csv", "--out", "{tmp}/requests.csv"],
])
def test_an_output_never_replaces_an_input_of_the_same_command(tmp_path, args):
    """Each input is left byte for byte as it was, and the command says why it stopped."""
    source = write_csv(tmp_path, "prompt_id,model,quality,cost_usd,gold\n"
                                 "p1,a,1,0.1,x\np1,b,0,0.2,x\n")
    (tmp_path / "out.csv").write_text("model,input,output\na,1,2\nb,1,2\n")
    (tmp_path / "prices.csv").write_text("model,input,output\na,1,2\nb,1,2\n")
    (tmp_path / "probes.jsonl").write_text('{"id": "q1", "prompt": "2+2?", "gold": "4"}\n')
    (tmp_path / "requests.csv").write_text("not yet a log\n")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    filled = [a.format(src=source, tmp=tmp_path) for a in args]
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", *filled],
                         capture_output=True, text=True, timeout=120)
    said = " ".join((run.stderr + run.stdout).split())
    assert run.returncode == 2 and "is also an input of this command" in said, said
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("args, says", [
    (["bench", "{src}", "--bootstrap", "-1"], "Invalid value for '--bootstrap'"),  # was taken as 0
    (["bench", "{src}", "--split", "validation"], "Invalid value for '--split'"),
    # tune said the table "has no prompts in split 'validation'":
    (["tune", "{tmp}/p.npz", "{src}", "--target", "cost", "--value", "1", "--split",
      "validation"], "Invalid value for '--split'"),
    (["bench", "{src}", "--axis", "weight"], "--axis must be cost, latency or energy"),
    (["bench", "{src}", "-p", "knn", "--param", "knn.k=3", "--param", "knn.k=5"],
     "--param knn.k is given twice"),  # the last one silently won
    (["bench", "{src}", "-p", "knn", "-p", "knn"], "-p knn is given twice"),  # ran twice
    (["bench", "{src}", "-p", "single", "--router", "mlp"], "give -p router or -p "
     "cascade-routing with it"),
    (["bench", "{src}", "-p", "router", "-p", "knn"], "-p knn is given twice"),
    (["data", "routerbench:"], "give the data's path after the prefix"),  # read the cwd
    # Studied twice, into two sections of one name whose plots overwrote each other:
    (["report", "{src}", "{src}", "--out", "{tmp}/r"], "['log.csv'] given twice"),
    # Each of these was silently ignored, or wrote an .npz archive under another name:
    (["fit", "{src}", "-p", "knn", "--folds", "2", "--out", "{tmp}/p.npz"],
     "give them with --objective"),
    (["fit", "{src}", "-p", "knn", "--families", "knn", "--out", "{tmp}/p.npz"],
     "give them with --objective"),
    (["fit", "{src}", "--objective", "lam=1", "--param", "k=5", "--out", "{tmp}/p.npz"],
     "--param sets a kind's parameters: give it with --policy"),
    (["fit", "{src}", "-p", "knn", "--out", "{tmp}/p.txt"], "a policy artifact is an .npz file"),
    (["tune", "{tmp}/p.npz", "{src}", "--target", "cost", "--value", "1", "--out", "{tmp}/t.json"],
     "a policy artifact is an .npz file"),
    # collect ran every model over the probes and only then refused the name (kept the
    # journal under it); a model named twice was called twice for one row.
    (["collect", "--sample", "1", "--out", "{tmp}/c.txt"], "the long format is written as one"),
    (["collect", "--models", "smollm2-135m,smollm2-135m", "--sample", "1", "--out",
      "{tmp}/c.csv"], "['smollm2-135m'] named twice"),
    # numpy's "all elements of broadcast shape must be non-negative":
    (["collect", "--models", " , ", "--sample", "1", "--out", "{tmp}/c.csv"],
     "no model named; the catalog has"),
    (["ask", "hi", "--models", ","], "no model named; the catalog has"),
    # Ray waited minutes on an address where nothing listens, logging each retry:
    (["collect", "--sample", "1", "--out", "{tmp}/c.csv", "--ray", "127.0.0.1:{closed}"],
     "cannot reach the Ray cluster at 127.0.0.1:"),
    (["serve", "--ray", "127.0.0.1:{closed}"], "cannot reach the Ray cluster at 127.0.0.1:"),
    (["serve", "--ray", "127.0.0.1:99999"], "99999 is not a port"),
])
def test_a_command_refuses_an_argument_it_cannot_honour(tmp_path, args, says):
    source = str(write_csv(tmp_path, "prompt_id,model,quality,cost_usd\np1,a,1,0.1\n"))
    filled = [a.format(tmp=tmp_path, src=source, closed=free_port()) for a in args]
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", *filled],
                         capture_output=True, text=True, timeout=120)
    said = " ".join(run.stderr.split())
    assert run.returncode == 2 and says in said and "Traceback" not in said, said
    assert not any(p.name.startswith(("p.txt", "t.json", "c.")) for p in tmp_path.iterdir())
    assert time.perf_counter() - started < 20  # refused before any model loaded


def test_a_file_of_test_prompts_alone_fits_nothing(tmp_path):
    """Every prompt marked 'test': fit said it fitted on them as "train prompts", and bench
    scored a router on the very prompts it had learned."""
    rows = "".join(f"p{i},question {i},{m},{(i + j) % 2},0.{j + 1},test\n" for i in range(12)
                   for j, m in enumerate("ab"))
    source = str(write_csv(tmp_path, "prompt_id,prompt,model,quality,cost_usd,split\n" + rows))
    for args, says in [
        (["fit", source, "-p", "knn", "--out", f"{tmp_path}/p.npz"],
         "has no prompts in split 'train' (it has test 12)"),
        (["fit", source, "--objective", "lam=1", "--out", f"{tmp_path}/p.npz"],
         "has no prompts in split 'train' (it has test 12)"),
        (["bench", source, "-p", "knn"], "fitting knn on its test prompts"),
    ]:
        run = subprocess.run([sys.executable, "-m", "llmtriage.cli", *args],
                             capture_output=True, text=True, timeout=120)
        said = " ".join(run.stderr.split())
        assert run.returncode == 2 and says in said and "Traceback" not in said, said
    assert not (tmp_path / "p.npz").exists()


def test_a_repeated_prompt_is_moved_to_train_and_convert_says_so(tmp_path):
    """The same question filed under two ids, one in each split, was scored as unseen."""
    prompts = [("p1", "2+2?", "train", 1), ("p2", "2+2?", "test", 1), ("p3", "3+3?", "test", 0)]
    rows = "".join(f"{pid},{text},{m},{q},0.{j + 1},{split}\n"
                   for pid, text, split, q in prompts for j, m in enumerate("ab"))
    source = write_csv(tmp_path, "prompt_id,prompt,model,quality,cost_usd,split\n" + rows)
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", "convert", str(source),
                          str(tmp_path / "out.csv")], capture_output=True, text=True,
                         timeout=120)
    said = " ".join(run.stdout.split())
    assert run.returncode == 0 and "1 of 2 test prompts repeat a train prompt's text" in said
    written = pd.read_csv(tmp_path / "out.csv").groupby("prompt_id")["split"].first()
    assert written.to_dict() == {"p1": "train", "p2": "train", "p3": "test"}


def degenerate_file(table, path, models: int, free: bool) -> None:
    """A few of LLMRouter's real models on 200 of its prompts: ``free`` as if every model
    were self-hosted and recorded at no cost."""
    test = table.split("test")
    n = 200
    rows = pd.DataFrame({
        "prompt_id": np.repeat([f"q{i}" for i in range(n)], models),
        "prompt": np.repeat(test.prompts[:n], models),
        "model": np.tile(list(test.models[:models]), n),
        "quality": test.quality[:n, :models].reshape(-1),
        "cost_usd": 0.0 if free else test.cost_usd[:n, :models].reshape(-1),
    })
    rows.to_csv(path, index=False)


@pytest.mark.parametrize("models,free", [(3, True), (1, False)])
def test_free_models_and_a_lone_model_are_reported_in_plain_words(llmrouter_table, tmp_path,
                                                                   models, free):
    """Every model free (self-hosted, no price) divided by a zero cost; a lone model left no
    gap to recover (printed as nan%) and a ranking router divided by zero."""
    path = tmp_path / "degenerate.csv"
    degenerate_file(llmrouter_table, path, models, free)
    run = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m",
                          "llmtriage.cli", "bench", str(path), "-p", "single", "-p", "oracle",
                          "-p", "random", "-p", "logistic", "-p", "sw-ranking"],
                         capture_output=True, text=True, timeout=300)
    said = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 0 and "Traceback" not in said, said
    assert "nan" not in said.lower(), said
    if free:
        assert "costs nothing here, so no share of its cost" in said, said
        assert "$0 a query" in said, said
    else:
        assert "random: no gap to recover" in said, said


def test_the_command_list_reads_as_sentences():
    """The command list printed each docstring's line breaks: 'save it (...): the' on one
    line and 'object bench --policy-file replays' on the next, on any terminal width."""
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", "--help"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "250"})
    rows = [" ".join(line.strip("│ ").split()) for line in run.stdout.splitlines()]
    assert any("no pickle): the object bench --policy-file replays and serve runs" in row
               for row in rows), run.stdout
    assert any("ask Answer one question through the policy fitted on the embedded ladder's "
               "recording (or a threshold cascade" in row for row in rows), run.stdout


def test_a_log_with_failed_calls_keeps_its_complete_cases_when_asked(llmrouter_table,
                                                                    tmp_path):
    """A real log has holes: calls that timed out, a model tried on a few prompts only.
    Refused by default (a hole may be a misspelt model name); ``--missing drop`` keeps the
    models that answered 90% of prompts and the prompts they all answered, says so, and
    moves no outcome from its cell."""
    path = tmp_path / "support-bot.csv"
    rows = unseen_nine_model_file(llmrouter_table, path)
    rng = np.random.default_rng(3)
    models = sorted(rows["model"].unique())
    trial = rows["model"] == models[0]  # a model tried on a third of the prompts
    timed_out = (rows["model"] == models[1]) & (rng.random(len(rows)) < 0.05)
    failed = trial & (rng.random(len(rows)) < 2 / 3) | timed_out
    rows[~failed].to_csv(path, index=False)
    with pytest.raises(DataError, match="--missing drop keeps the complete cases"):
        load_table(str(path))
    table = load_table(str(path), missing="drop")
    assert models[0] not in table.models and table.n_models == 8
    lost = set(rows.loc[timed_out, "prompt_id"])
    assert table.n_prompts == rows["prompt_id"].nunique() - len(lost)
    assert not lost & set(table.prompt_ids)
    share = sum(1 - failed[trial]) / trial.sum()
    assert f"dropped model {models[0]}: outcomes for only {share:.0%} of prompts" in table.notes
    assert any(f"dropped {len(lost)} of " in n for n in table.notes)
    kept = rows[~failed & ~rows["prompt_id"].isin(lost) & (rows["model"] != models[0])]
    pick = kept.iloc[len(kept) // 2]
    i, j = list(table.prompt_ids).index(pick["prompt_id"]), table.model_index(pick["model"])
    assert table.quality[i, j] == pytest.approx(pick["quality"])
    assert table.latency_ms[i, j] == pytest.approx(pick["latency_ms"])


def test_dropping_holes_still_names_a_bad_entry_by_its_row_in_the_file(tmp_path):
    path = write_csv(tmp_path, "prompt_id,model,quality,cost_usd\np1,a,1,.1\np2,a,0,.1\n"
                               "p2,b,0,.2\np3,a,1,.1\np3,b,1,twelve\n")
    with pytest.raises(DataError, match="non-number 'twelve' \\(data row 5\\)"):
        load_table(str(path), missing="drop")


@pytest.mark.parametrize("args, says", [
    (["data", "{holes}"], "every prompt needs an outcome for every model; 1 missing"),
    (["data", "{holes}", "--missing", "wrong"], "long data takes missing=refuse or drop, "
                                                "not 'wrong'"),
    (["data", "routerbench:{data}/routerbench", "--missing", "refuse"],
     "routerbench data takes missing=drop"),
])
def test_missing_outcomes_are_refused_or_dropped_as_the_format_allows(data_dir, tmp_path,
                                                                      args, says):
    # Ten prompts, model b's call on the last one failed.
    holes = write_csv(tmp_path, "prompt_id,model,quality,cost_usd\n" + "".join(
        f"p{i},a,1,.1\n" + f"p{i},b,0,.2\n" * (i < 9) for i in range(10)))
    filled = [a.format(holes=holes, data=data_dir) for a in args]
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", *filled],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert says in " ".join(run.stderr.split()), run.stderr
    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", "data", str(holes),
                          "--missing", "drop"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "9 prompts x 2 models" in run.stdout and "dropped 1 of 10 prompts" in run.stdout
