"""The contract every registered policy kind keeps, checked on each of them by name.

A kind registered anywhere (the toy below shows a new one needs nothing but its class and a
registration) is built through the registry, fitted on real recorded outcomes (ZeroEval's
GSM8K answers, with a cross-model agreement confidence), and must:

- decide the same for a query alone as in a batch (the live gateway runs batches of one);
- save and load (arrays + JSON) and then decide exactly as before, learned state included;
- refuse to save if it reads gold outcomes (an upper bound is not a servable policy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmtriage.backends.base import Queries
from llmtriage.backends.replay import ReplayBackend
from llmtriage.data import DataError, load_table
from llmtriage.data.table import OutcomeTable
from llmtriage.policies import registry
from llmtriage.policies.artifacts import ArtifactError, load, save
from llmtriage.policies.base import STOP, Decision, Policy, State, resolve
from llmtriage.policies.loop import run_policy
from llmtriage.signals.agreement import with_agreement

FIRST, VOTER, TOP = "deepseek-chat", "gemini-1.5-flash", "Llama-3.1-405B-Inst@sambanova"
ONE_BY_ONE = 24  # queries replayed one at a time against the batch


class CheapestFirst(Policy):
    """The toy: always the model that was cheapest on the training split."""

    name = "cheapest"
    requires_fit = True

    def fit(self, table: OutcomeTable) -> CheapestFirst:
        self.models_ = table.models
        self.cost_ = np.nanmean(table.cost_usd, axis=0)
        return self

    def step(self, state: State) -> Decision:
        calls = np.full(len(state.n_steps), STOP, dtype=np.int64)
        cheapest = resolve(state.models, self.models_[int(np.argmin(self.cost_))])[0]
        calls[state.n_steps == 0] = cheapest
        return Decision(calls)


registry.register("cheapest", CheapestFirst, "the cheapest model on train (a test's toy)")


@pytest.fixture(scope="module", autouse=True)
def _forget_the_toy():
    yield
    registry.unregister("cheapest")


@pytest.fixture(scope="module")
def table(data_dir) -> OutcomeTable:
    gsm = load_table(f"zeroeval:{data_dir / 'zeroeval'}", task="gsm")
    gsm = with_agreement(gsm, FIRST, [VOTER])
    keep = [m for m in gsm.models if m.startswith(FIRST + "+")] + [VOTER, TOP]
    rows = np.flatnonzero(np.arange(gsm.n_prompts) % 3 == 0)  # 440 prompts: quick fits
    return gsm.select_models(keep).take(rows)


def built(kind: str, table: OutcomeTable) -> Policy:
    params = {"embedder": "hashing"} if "embedder" in registry.parameters(kind) else {}
    if kind == "single":
        params["model"] = TOP
    if kind == "search":  # a few families keep it quick; every one is searched elsewhere
        params["families"] = ["single", "knn", "calibrated-cascade", "agreement-cascade"]
    if kind == "agreement-cascade":
        params.update(answerer=table.models[0], voters=[VOTER], fallback=TOP)
    policy = registry.build_one(kind, registry.Context.of(table), params)
    train, test = table.split("train"), table.split("test")
    policy.fit(test if policy.reads_gold else train)
    if policy.tradeoff:  # somewhere in the middle of its curve, where choices are mixed
        grid = policy.grid(train)
        policy = policy.with_params(**{policy.tradeoff: grid[len(grid) // 2]})
    return policy


def decisions(policy: Policy, backend: ReplayBackend, queries: Queries
              ) -> tuple[np.ndarray, np.ndarray]:
    trace = run_policy(policy, backend, queries)
    return trace.called, trace.accepted_model


def same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    width = max(a[0].shape[1], b[0].shape[1])
    pad = [np.pad(x[0], ((0, 0), (0, width - x[0].shape[1])), constant_values=STOP)
           for x in (a, b)]
    np.testing.assert_array_equal(pad[0], pad[1])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("kind", registry.kinds())
def test_the_contract(kind, table, tmp_path):
    policy = built(kind, table)
    test = table.split("test")
    backend = ReplayBackend(test, with_answers=policy.reads_answers)
    queries = backend.queries()
    batch = decisions(policy, backend, queries)
    assert batch[0].shape[0] == test.n_prompts and (batch[1] >= 0).all()
    # One query at a time, as the gateway runs them: the same decisions.
    alone = [decisions(policy, backend, Queries(queries.prompt_ids[i:i + 1],
                                                queries.prompts[i:i + 1],
                                                queries.tasks[i:i + 1], queries.rows[i:i + 1]))
             for i in range(ONE_BY_ONE)]
    width = max(a[0].shape[1] for a in alone)
    stacked = (np.vstack([np.pad(a[0], ((0, 0), (0, width - a[0].shape[1])),
                                 constant_values=STOP) for a in alone]),
               np.concatenate([a[1] for a in alone]))
    same((batch[0][:ONE_BY_ONE], batch[1][:ONE_BY_ONE]), stacked)
    # Saved and loaded: the very same decisions, with no refit.
    if policy.reads_gold:
        with pytest.raises(ArtifactError, match="not a policy to save"):
            save(policy, tmp_path / "p.npz")
        return
    loaded = load(save(policy, tmp_path / "p.npz", note="contract"))
    assert type(loaded) is type(policy) and loaded.name == kind
    assert getattr(loaded, "frozen_", False)
    same(batch, decisions(loaded, backend, queries))


def test_the_toy_runs_everywhere_a_kind_does(table, tmp_path):
    """Registered once, a kind is a -p name for bench, a config kind and an artifact kind."""
    from llmtriage.evaluation.compare import compare

    policy = registry.build_one("cheapest", registry.Context.of(table))
    result = compare(table, [policy, *registry.build("single", registry.Context.of(table))],
                     bootstrap=0)
    cheapest = min(result.singles, key=lambda p: p.cost_per_query)
    assert result.curve("cheapest").points[0].quality == pytest.approx(cheapest.quality)
    assert load(save(policy, tmp_path / "toy.npz")).name == "cheapest"


def test_a_bandit_saves_what_it_learned(table, tmp_path):
    """Feedback changes the bandit; the artifact carries the change."""
    bandit = built("bandit", table)
    test = table.split("test")
    backend = ReplayBackend(test)
    before = decisions(bandit, backend, backend.queries())
    favourite = test.models[int(np.bincount(before[1]).argmax())]
    for prompt in test.prompts[:60]:
        bandit.learn(str(prompt), favourite, 0.0)
    after = decisions(bandit, backend, backend.queries())
    assert (after[1] != before[1]).any()
    same(after, decisions(load(save(bandit, tmp_path / "b.npz")), backend, backend.queries()))


def test_a_corrected_score_leaves_the_bandit_as_if_only_it_was_given(table):
    """A response's second score replaces its first: the gateway keeps the remembered
    context, not the prompt, and the learned state is the latest score's alone."""
    corrected, direct = built("bandit", table), built("bandit", table)
    model = table.models[0]
    for i, prompt in enumerate(table.prompts[:20]):
        context = corrected.remember(str(prompt))
        assert context.nbytes <= 4 * (corrected.dims + 1)  # a few numbers, not the text
        corrected.learn(context, model, 0.0)
        corrected.learn(context, model, 1.0 if i % 2 else 0.3, previous=0.0)
        direct.learn(str(prompt), model, 1.0 if i % 2 else 0.3)
    np.testing.assert_allclose(corrected.b_, direct.b_, atol=1e-5)
    np.testing.assert_allclose(corrected.a_inv_, direct.a_inv_, atol=1e-6)


def test_unknown_kinds_and_parameters_are_named(table):
    context = registry.Context.of(table)
    with pytest.raises(DataError, match="unknown policy kind 'cascade'.*calibrated-cascade"):
        registry.build("cascade", context)
    with pytest.raises(DataError, match="unexpected keyword argument 'colour'.*ladder"):
        registry.build("calibrated-cascade", context, {"colour": "red"})
    with pytest.raises(DataError, match="unknown confidence signal 'vibes'"):
        registry.build("threshold-cascade", context, {"signal": "vibes"})
    with pytest.raises(DataError, match="ladder names"):
        registry.build("threshold-cascade", context, {"ladder": ["gpt-9"]})


@pytest.mark.parametrize(("param", "value", "reason"), [
    ("k", "abc", "valid integer"), ("k", -3, "greater than or equal to 1"),
    ("k", 2.5, "fractional part"), ("k", [1, 2], "valid integer"),
    ("lam", float("nan"), "finite number"), ("target", float("inf"), "finite number"),
])
def test_a_parameter_of_the_wrong_type_or_range_is_named(table, param, value, reason):
    """Every kind's constructor annotations bound its parameters where they enter (the
    CLI, a config, an artifact): a bad one is named, never left to fail inside a fit."""
    context = registry.Context.of(table)
    with pytest.raises(DataError, match=f"policy knn: parameter {param}=.*{reason}"):
        registry.build("knn", context, {param: value, "embedder": "hashing"})


@pytest.mark.parametrize(("kind", "param", "value"), [
    ("cascade-routing", "bins", 100_000_000), ("cascade-routing", "samples", 10_000_000),
    ("mf", "dim", 100_000), ("mf", "epochs", 100_000_000), ("sw-ranking", "iterations", 10**9),
    ("bandit", "dims", 100_000),
])
def test_a_parameter_that_sizes_memory_or_time_is_bounded(table, kind, param, value):
    """A hundred million bins asked for 71 GiB (a MemoryError traceback from the fit); a
    hundred million epochs ran for days. Each is refused where it enters, naming the bound."""
    context = registry.Context.of(table)
    with pytest.raises(DataError, match=f"policy {kind}: parameter {param}=.*less than or equal"):
        registry.build(kind, context, {param: value, "embedder": "hashing"})


def test_a_bandit_asked_for_more_dimensions_than_prompts_uses_what_there_is(table):
    """Its context is a PCA of the train prompts: 40 prompts give 40 components at most.
    Asked for 300, it once fitted a 301-wide model for 41-wide contexts and failed on the
    first query with numpy's matmul message."""
    few = table.take(np.arange(40))
    bandit = registry.build_one("bandit", registry.Context.of(few),
                                {"dims": 300, "embedder": "hashing"}).fit(few)
    assert bandit.basis_.shape[1] <= 40 and bandit.a_inv_.shape[1] == bandit.basis_.shape[1] + 1
    called, _ = decisions(bandit, ReplayBackend(table),
                          Queries.from_table(table.take(np.arange(40, 60))))
    assert (called[:, 0] >= 0).all()  # every query decided


def test_parameters_are_coerced_to_their_declared_types(table):
    context = registry.Context.of(table)
    knn = registry.build_one("knn", context, {"k": 7.0, "embedder": "hashing"})
    assert knn.k == 7 and isinstance(knn.k, int)
    cascade = registry.build_one("threshold-cascade", context,
                                 {"ladder": VOTER, "threshold": -1})
    assert cascade.ladder == (VOTER,) and cascade.threshold == -1.0
    from llmtriage.policies.params import _adapters

    for kind in registry.kinds():  # every kind's annotations resolve (to a validator each)
        assert set(_adapters(registry.get(kind).cls)) <= set(registry.parameters(kind)) | {
            "kind"}


def edited_knn(table, tmp_path, edit) -> Path:
    """A saved kNN router, its header and arrays changed by ``edit(header, arrays)`` and
    written back as an npz."""
    import json

    path = save(built("knn", table), tmp_path / "knn.npz")
    with np.load(path) as saved:
        header = json.loads(str(saved["__header__"]))
        arrays = {k: saved[k] for k in saved.files if k != "__header__"}
    edit(header, arrays)
    edited = tmp_path / "edited.npz"
    np.savez(edited, __header__=np.array(json.dumps(header)), **arrays)
    return edited


def test_an_artifact_with_edited_parameters_is_refused_naming_them(table, tmp_path):
    import zipfile

    def edit(header, arrays):
        header["policy"]["params"]["k"] = -3

    edited = edited_knn(table, tmp_path, edit)
    assert zipfile.is_zipfile(edited)
    with pytest.raises(ArtifactError, match="parameter k=-3: .*greater than or equal to 1"):
        load(edited)


def _cut_keys(header, arrays):  # its neighbours' features cut short
    arrays["p.keys_"] = arrays["p.keys_"][:, :7]


def _costs_as_text(header, arrays):  # its models' costs saved as text
    arrays["p.cost_"] = np.array(["x"] * len(arrays["p.cost_"]))


def _k_as_a_word(header, arrays):  # its chosen k saved as a word
    header["policy"]["state"]["k_"] = "many"


@pytest.mark.parametrize(("edit", "fault"), [
    (_cut_keys, "ValueError: matmul"), (_costs_as_text, "UFuncTypeError"),
    (_k_as_a_word, "TypeError"),
])
def test_an_artifact_whose_learned_state_does_not_fit_together_fails_to_load(
        table, tmp_path, edit, fault):
    """Caught when loaded (a replay of two made-up prompts), not by a traceback at the
    first request it decides."""
    with pytest.raises(ArtifactError, match=f"damaged artifact \\({fault}"):
        load(edited_knn(table, tmp_path, edit))


def test_sticky_sessions_wrap_any_policy(table):
    """A pinned query calls its model once; the others get the wrapped policy's decisions."""
    from dataclasses import replace

    from llmtriage.policies.sticky import Sticky

    policy = built("calibrated-cascade", table)
    test = table.split("test")
    backend = ReplayBackend(test)
    queries = backend.queries()
    free = decisions(policy, backend, queries)
    pins = [VOTER if i % 3 == 0 else None for i in range(test.n_prompts)]
    sticky = decisions(Sticky(policy), backend, replace(queries, pinned=pins))
    pinned = np.array([p is not None for p in pins])
    assert (sticky[0][pinned, 0] == test.model_index(VOTER)).all()
    assert (sticky[0][pinned, 1:] == STOP).all() and (sticky[1][pinned] ==
                                                      test.model_index(VOTER)).all()
    same((sticky[0][~pinned], sticky[1][~pinned]), (free[0][~pinned], free[1][~pinned]))


@pytest.mark.slow
def test_a_cascade_with_a_learned_scorer_keeps_the_contract(table, tmp_path):
    """The scorer is the cascade's own: fitted with it, saved with it, applied by it to each
    answer's text, so a recorded answer and the same answer live score the same."""
    import asyncio

    from llmtriage.backends.live import ChatRequest, Completion

    ladder = [VOTER, TOP]
    policy = registry.build_one("calibrated-cascade", registry.Context.of(table), {
        "ladder": ladder, "signal": "learned-scorer", "embedder": "hashing", "threshold": 0.9})
    policy.fit(table.split("train"))
    test = table.split("test")
    backend = ReplayBackend(test, with_answers=True)
    queries = backend.queries()
    batch = decisions(policy, backend, queries)
    assert 1 < batch[0].shape[1] and (batch[0][:, 1] != STOP).any()  # it does escalate
    assert (batch[0][:, 1] == STOP).any()  # and it does stop early
    # It pays for its own scoring: every answer it judges costs the CPU time, price and
    # energy measured when it was fitted, on top of the call that produced the answer.
    ms, usd, joules = policy.scoring_cost_
    assert ms > 0 and usd > 0 and joules > 0
    called = batch[0]
    taken = called != STOP
    rows = np.repeat(queries.rows[:, None], called.shape[1], axis=1)
    recorded = np.where(taken, test.cost_usd[rows, np.where(taken, called, 0)], 0).sum(1)
    trace = run_policy(policy, backend, queries)
    np.testing.assert_allclose(trace.steps.total("cost_usd"),
                               recorded + usd * taken.sum(1), rtol=1e-9)
    loaded = load(save(policy, tmp_path / "scored.npz"))
    assert loaded.scoring_cost_ == pytest.approx(policy.scoring_cost_)
    np.testing.assert_allclose(run_policy(loaded, backend, queries).steps.total("cost_usd"),
                               trace.steps.total("cost_usd"))
    same(batch, decisions(loaded, backend, queries))
    alone = decisions(loaded, backend, Queries(queries.prompt_ids[:1], queries.prompts[:1],
                                               queries.tasks[:1], queries.rows[:1]))
    same((batch[0][:1], batch[1][:1]), alone)
    # The live face: a completion carrying a recorded answer scores as that answer did.
    j = test.model_index(VOTER)
    offline = loaded.scorer_.scores(VOTER, test.prompts[:5], test.responses[:5, j])
    live = [asyncio.run(loaded.live_signal()(
        None, VOTER, ChatRequest.ask(str(test.prompts[i])),
        Completion(VOTER, str(test.responses[i, j]), 1, 1, 1.0, 0.0))).confidence
        for i in range(5)]
    np.testing.assert_allclose(live, offline, rtol=1e-9)
    with pytest.raises(ValueError, match="needs its responses"):
        decisions(loaded, ReplayBackend(test), queries)
    # Wrapped for sticky sessions (as every served policy is), it is still itself.
    from llmtriage.policies.sticky import Sticky

    wrapped = Sticky(loaded)
    assert wrapped.live_signal() is loaded.scorer_ and wrapped.reads_answers
    same(batch, decisions(wrapped, backend, queries))

