"""Loaders reproduce the published figures of every shared data set."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pandas as pd
import pytest

from llmtriage.data import DataError, load_table
from llmtriage.data.loaders import arena, llmrouter, routellm, routerbench, zeroeval
from llmtriage.data.loaders.routellm import STRONG, WEAK


def test_routerbench_published_gpt4_accuracy(data_dir):
    table = routerbench.load(data_dir / "routerbench")
    acc = {t: table.filter_task(t).mean_quality()["gpt-4-1106-preview"]
           for t in ("arc-challenge", "mbpp")}
    assert round(acc["arc-challenge"], 3) == 0.954
    assert round(acc["mbpp"], 3) == 0.686
    assert table.n_models == 11
    assert set(table.splits) == {"train", "test"}
    # Real USD per query from the source, and the responses kept for later scorers.
    assert table.has("cost_usd") and (table.cost_usd > 0).all()
    assert table.responses is not None and table.responses.shape == table.quality.shape


def test_routerbench_pickle_loads_like_its_csv(data_dir, tmp_path):
    frame = pd.read_csv(data_dir / "routerbench" / "mbpp_test.csv")
    frame.to_pickle(tmp_path / "mbpp.pkl")
    from_pickle = load_table(str(tmp_path / "mbpp.pkl"))
    from_csv = routerbench.load(data_dir / "routerbench" / "mbpp_test.csv")
    assert from_pickle.models == from_csv.models
    np.testing.assert_array_equal(from_pickle.quality, from_csv.quality)
    np.testing.assert_allclose(from_pickle.cost_usd, from_csv.cost_usd)


def test_routerbench_counts_mmlus_subjects_as_one_task(data_dir, tmp_path):
    """The published pickle names each MMLU subject as an eval; RouterBench's tables count
    MMLU as one task, and so does the loader, so that a held-out task is a benchmark."""
    frame = pd.read_csv(data_dir / "routerbench" / "arc_challenge_test.csv")
    subjects = np.array(["mmlu-anatomy", "mmlu-astronomy", "mmlu-virology"])
    frame.loc[frame.index[::2], "eval_name"] = subjects[np.arange(len(frame))[::2] % 3]
    frame.to_pickle(tmp_path / "routerbench_0shot.pkl")
    table = load_table(str(tmp_path / "routerbench_0shot.pkl"))
    assert sorted(set(table.tasks)) == ["arc-challenge", "mmlu"]
    assert ("3 MMLU subjects (mmlu-*) counted as one task, mmlu, as RouterBench reports it"
            in table.notes)
    mmlu = load_table(str(tmp_path / "routerbench_0shot.pkl"), task="mmlu")
    assert mmlu.n_prompts == (table.tasks == "mmlu").sum() > 200


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    target = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Payload(target)))
    with pytest.raises(DataError, match="refusing pickle"):
        routerbench.load(tmp_path / "evil.pkl")
    assert not target.exists()


@pytest.mark.parametrize(
    ("task", "weak", "strong"),
    [("mmlu", 0.681, 0.806), ("gsm8k", 0.638, 0.857), ("mt-bench", 0.834, 0.923)],
)
def test_routellm_published_accuracies(data_dir, task, weak, strong):
    table = routellm.load(data_dir / "routellm", tasks=(task,), decontaminate=False)
    q = table.mean_quality()
    assert round(q[WEAK], 3) == weak
    assert round(q[STRONG], 3) == strong


def test_routellm_removes_contaminated_prompts(data_dir):
    full = routellm.load(data_dir / "routellm", decontaminate=False)
    clean = routellm.load(data_dir / "routellm")
    sizes = {t: (int((full.tasks == t).sum()), int((clean.tasks == t).sum()))
             for t in routellm.TASKS}
    assert sizes == {"mmlu": (14042, 14037), "gsm8k": (1319, 1307), "mt-bench": (80, 72)}
    # Decontamination barely moves the published accuracies.
    assert abs(clean.filter_task("gsm8k").mean_quality()[STRONG] - 0.857) < 0.002
    # Costs come from RouteLLM's own prices, and the notes say so.
    assert any("24.7" in n for n in clean.notes)
    gpt4, mixtral = clean.mean_cost()[STRONG], clean.mean_cost()[WEAK]
    assert gpt4 / mixtral == pytest.approx(24.7 / 0.24, rel=0.35)


@pytest.mark.parametrize(("task", "min_share"), [("gsm", 0.6), ("math-l5", 0.9)])
def test_zeroeval_matches_official_summaries(data_dir, task, min_share):
    # The summaries count a missing answer as wrong over all prompts; so does missing="wrong".
    table = zeroeval.load(data_dir / "zeroeval", task=task, missing="wrong")
    official = {r["Model"]: float(r["Acc"])
                for r in json.loads((data_dir / "zeroeval" / "summaries"
                                     / f"{task}.summary.json").read_text())}
    ours = {m: 100 * q for m, q in table.mean_quality().items()}
    common = sorted(set(ours) & set(official))
    assert len(common) >= 30
    diff = np.array([abs(ours[m] - official[m]) for m in common])
    # The matrices are re-scored from the published outputs; most models match the official
    # accuracy to within 0.1 point, a few (named in the README) do not.
    assert np.median(diff) <= 0.1
    assert (diff <= 0.1).mean() >= min_share


def test_zeroeval_drops_incomplete_models_and_says_so(data_dir):
    table = zeroeval.load(data_dir / "zeroeval", task="gsm")
    assert "gemini-1.5-flash-exp-0827" not in table.models
    assert any("gemini-1.5-flash-exp-0827" in n for n in table.notes)
    assert table.n_models == 41 and table.n_prompts == 1319
    # Cost derived from lengths and the dated catalog, with every price named.
    assert sum(n.startswith("price ") for n in table.notes) == 41


def test_llmrouter_keeps_splits_and_its_own_prices(data_dir):
    table = llmrouter.load(data_dir / "llmrouter")
    assert table.split_sizes() == {"test": 500, "train": 5608}
    # 119 of its test questions are train questions word for word (69 scored alike): a
    # router scored on them is scored on what it was fitted on.
    assert load_table(str(data_dir / "llmrouter")).split_sizes() == {"test": 381,
                                                                      "train": 5727}
    assert table.n_models == 9
    price_notes = [n for n in table.notes if n.startswith("price qwen2.5-7b-instruct")]
    assert price_notes and "$0.2 in" in price_notes[0] and "default_llm.json" in price_notes[0]


def test_arena_bench_scores_are_judge_over_ten(data_dir):
    table = arena.load(data_dir / "arena_bench_v1")
    raw = pd.read_csv(data_dir / "arena_bench_v1" / "arena_bench_v1_judge_scores_300xM.csv",
                      index_col="question_id")
    gpt4 = "gpt-4-1106-preview"
    expected = raw.loc[list(table.prompt_ids), gpt4].mean() / 10
    assert table.mean_quality()[gpt4] == pytest.approx(expected)
    assert "gpt-3.5-turbo" not in table.models  # answered only two thirds of the prompts


def _damaged(data_dir, tmp_path, name: str, file: str, text: str):
    """A copy of a shared set with one file replaced by ``text``."""
    import shutil

    copy = tmp_path / name
    shutil.copytree(data_dir / name, copy)
    (copy / file).write_text(text)
    return copy


ARENA_SCORES = "arena_bench_v1_judge_scores_300xM.csv"


@pytest.mark.parametrize(("name", "file", "text", "fault"), [
    ("llmrouter", "dcrouter_train.json", '{"question": "q"}', "Input should be a valid list"),
    ("llmrouter", "dcrouter_train.json", '[{"question": "q", "scores": {"a": 2}}]',
     "0.scores: Value error, model 'a' scored 2.0, not a share in [0, 1]"),
    # The model was left out of the message: its name is not an identifier.
    ("llmrouter", "dcrouter_train.json", '[{"question": "q", "scores": {"gpt-4o": NaN}}]',
     "model 'gpt-4o' scored nan, not a share"),
    ("llmrouter", "dcrouter_train.json", '[{"question": "q"}]', "0.scores: Field required"),
    ("llmrouter", "default_llm.json", '{"m": {"input_price": "x", "output_price": 1}}',
     "m.input_price: Input should be a valid number"),
    ("arena_bench_v1", ARENA_SCORES, "x\n1\n", "no column 'question_id'"),
    ("arena_bench_v1", ARENA_SCORES, "question_id,gpt-4-1106-preview\nq1,good\n",
     "column 'gpt-4-1106-preview' has a non-number 'good' (data row 1)"),
])
def test_a_damaged_file_of_a_known_format_is_named_not_a_traceback(data_dir, tmp_path, name,
                                                                     file, text, fault):
    copy = _damaged(data_dir, tmp_path, name, file, text)
    fmt = "arena" if name.startswith("arena") else name
    with pytest.raises(DataError, match=re.escape(fault)):
        load_table(f"{fmt}:{copy}")


def test_sniffing_recognises_every_shared_set(data_dir):
    names = {
        "routerbench": "routerbench", "routellm": "routellm", "zeroeval": "zeroeval-gsm",
        "llmrouter": "llmrouter", "arena_bench_v1": "arena-bench",
    }
    for folder, name in names.items():
        assert load_table(str(data_dir / folder)).name == name


def test_hash_splits_are_stable(data_dir):
    a = load_table(str(data_dir / "routellm"))
    b = load_table(str(data_dir / "routellm"))
    np.testing.assert_array_equal(a.splits, b.splits)
    share = (a.splits == "test").mean()
    assert 0.27 < share < 0.33
    c = load_table(str(data_dir / "routellm"), seed=1)
    assert (c.splits != a.splits).any()


@pytest.mark.parametrize(("folder", "task", "leaked"), [
    ("llmrouter", None, 119), ("routellm", "mmlu", 46), ("routerbench", "mbpp", 2),
    ("routerbench", "arc-challenge", 0), ("zeroeval", "gsm", 0),
])
def test_no_test_prompt_repeats_a_train_prompt(data_dir, folder, task, leaked):
    """Published splits (and ids hashed apart) repeat prompts: each such test prompt counts
    as train, and the table says how many."""
    table = load_table(str(data_dir / folder), task=task)
    train = set(table.prompts[table.splits == "train"])
    assert not any(p in train for p in table.prompts[table.splits == "test"])
    said = [n for n in table.notes if "repeat a train prompt's text" in n]
    assert (said[0].startswith(f"split: {leaked} of ") if leaked else not said), said


def test_blank_or_spaced_prompts_are_matched_as_texts_not_as_blanks():
    from llmtriage.data.splits import decontaminate, kfold, same_text
    from llmtriage.data.table import OutcomeTable

    prompts = ["what is 2+2?", "", "what is 2+2? ", "", "capital of France?", "2+3?"]
    splits = ["train", "train", "test", "test", "test", "train"]
    table = OutcomeTable.build(("a", "b"), [f"p{i}" for i in range(6)], np.ones((6, 2)) / 2,
                               prompts=prompts, splits=splits)
    fixed = decontaminate(table)
    # The spaced repeat moves to train; prompts without text match nothing.
    assert fixed.splits.tolist() == ["train", "train", "train", "test", "test", "train"]
    codes = same_text(np.array(prompts, dtype=object))
    assert codes[0] == codes[2] and len(set(codes.tolist())) == 5
    for kept, held in kfold(6, 2, groups=codes):
        assert (0 in held) == (2 in held) and set(kept) | set(held) == set(range(6))
    unique = np.arange(40)  # no repeats: the very folds an ungrouped split gives
    for (k1, h1), (k2, h2) in zip(kfold(40, 3, seed=5, groups=unique), kfold(40, 3, seed=5),
                                  strict=True):
        np.testing.assert_array_equal(h1, h2)
        np.testing.assert_array_equal(k1, k2)
