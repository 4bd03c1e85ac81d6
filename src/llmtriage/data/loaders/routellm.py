"""RouteLLM's evaluation files (Ong et al. 2024): MMLU, GSM8K and MT-Bench, GPT-4 vs Mixtral.

Contaminated prompts (those that appear in RouteLLM's router training data, listed in each
benchmark's ``contaminated_prompts.jsonl``) are removed by default, as RouteLLM's own
evaluation does. MT-Bench is one prompt per question: its quality is the mean GPT-4 judge
score of the two turns divided by 10 (RouteLLM routes on the first turn and scores both).

The files carry no cost. RouteLLM's own analysis prices GPT-4-1106 and Mixtral-8x7B at
$24.7 and $0.24 per million tokens (blended); those are the default prices here, applied to
token counts estimated at four characters per token.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from llmtriage.data.errors import DataError
from llmtriage.data.prices import Price, PriceCatalog, derive_costs, tokens_from_chars
from llmtriage.data.table import OutcomeTable

STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
MODELS = (WEAK, STRONG)
TASKS = ("mmlu", "gsm8k", "mt-bench")
_ROUTELLM_SOURCE = "RouteLLM paper (arXiv 2406.18665), blended price"
ROUTELLM_PRICES = PriceCatalog(
    {STRONG: Price(24.7, 24.7, _ROUTELLM_SOURCE, "2024-06"),
     WEAK: Price(0.24, 0.24, _ROUTELLM_SOURCE, "2024-06")},
    origin="RouteLLM",
)


def _jsonl(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"RouteLLM data: missing file {path}")
    try:
        return pd.read_json(path, lines=True)
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON lines: {exc}") from None


def _contaminated(root: Path, task: str) -> set[str]:
    return set(_jsonl(root / task / "contaminated_prompts.jsonl")["eval_prompt"])


def _bool_matrix(frame: pd.DataFrame, path: Path) -> np.ndarray:
    missing = [m for m in MODELS if m not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing model columns {missing}")
    values = frame[list(MODELS)]
    if values.isna().any().any():
        raise DataError(f"{path}: missing correctness values")
    return values.astype(float).to_numpy()


def _mmlu(root: Path, decontaminate: bool) -> dict:
    files = sorted((root / "mmlu" / "responses").glob("mmlu_*.csv"))
    if not files:
        raise DataError(f"{root}/mmlu/responses: no mmlu_<subject>.csv files")
    frames = []
    for f in files:
        frame = pd.read_csv(f)
        frame["subject"] = f.stem.removeprefix("mmlu_")
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["id"] = [f"mmlu-{s}-{i}" for s, i in zip(frame["subject"], frame.index, strict=True)]
    if decontaminate:
        frame = frame[~frame["prompt"].isin(_contaminated(root, "mmlu"))]
    chars_in = frame["prompt"].str.len().to_numpy(dtype=float)
    return {
        "ids": frame["id"].to_numpy(),
        "prompts": frame["prompt"].to_numpy(),
        "quality": _bool_matrix(frame, root / "mmlu"),
        # MMLU answers are one letter: a single output token.
        "tokens_in": np.repeat(tokens_from_chars(chars_in)[:, None], 2, axis=1),
        "tokens_out": np.ones((len(frame), 2)),
        "responses": None,
    }


def _gsm8k(root: Path, decontaminate: bool) -> dict:
    path = root / "gsm8k" / "gsm8k_responses.csv"
    if not path.is_file():
        raise DataError(f"RouteLLM data: missing file {path}")
    frame = pd.read_csv(path)
    frame["id"] = [f"gsm8k-{i}" for i in frame.index]
    if decontaminate:
        frame = frame[~frame["prompt"].isin(_contaminated(root, "gsm8k"))]
    responses = frame[[f"{m}_response" for m in MODELS]].fillna("").astype(str)
    chars_in = frame["prompt"].str.len().to_numpy(dtype=float)
    return {
        "ids": frame["id"].to_numpy(),
        "prompts": frame["prompt"].to_numpy(),
        "quality": _bool_matrix(frame, path),
        "tokens_in": np.repeat(tokens_from_chars(chars_in)[:, None], 2, axis=1),
        "tokens_out": tokens_from_chars(responses.apply(lambda c: c.str.len()).to_numpy()),
        "responses": responses.to_numpy(dtype=object),
    }


_ANSWER = re.compile(
    r"### Assistant A:\n(.*?)(?=\n\n### User:|\n\n<\|The End of Assistant A)", re.DOTALL
)


def _mt_bench(root: Path, decontaminate: bool) -> dict:
    questions = _jsonl(root / "mt_bench" / "question.jsonl")
    judgements = _jsonl(root / "mt_bench" / "judgements.jsonl")
    if decontaminate:
        bad = _contaminated(root, "mt_bench")
        keep = questions["turns"].apply(lambda t: not (t[0] in bad or t[1] in bad))
        questions = questions[keep]
    scores = judgements.pivot_table(index="question_id", columns="model", values="score")
    counts = judgements.pivot_table(
        index="question_id", columns="model", values="score", aggfunc="count"
    )
    missing = [m for m in MODELS if m not in scores.columns]
    if missing:
        raise DataError(f"{root}/mt_bench/judgements.jsonl: no judgements for {missing}")
    qids = questions["question_id"].to_numpy()
    if (counts.reindex(qids)[list(MODELS)] != 2).any().any():
        raise DataError(f"{root}/mt_bench/judgements.jsonl: a question lacks a turn's judgement")
    multi = judgements[judgements["turn"] == 2].set_index(["question_id", "model"])["user_prompt"]
    answer_chars = np.array(
        [[sum(map(len, _ANSWER.findall(multi[(q, m)]))) for m in MODELS] for q in qids],
        dtype=float,
    )
    prompt_chars = questions["turns"].apply(lambda t: len(t[0]) + len(t[1])).to_numpy(float)
    return {
        "ids": np.array([f"mt-bench-{q}" for q in qids]),
        "prompts": questions["turns"].apply(lambda t: t[0]).to_numpy(),
        "quality": scores.reindex(qids)[list(MODELS)].to_numpy(dtype=float) / 10.0,
        "tokens_in": np.repeat(tokens_from_chars(prompt_chars)[:, None], 2, axis=1),
        "tokens_out": tokens_from_chars(answer_chars),
        "responses": None,
    }


_READERS = {"mmlu": _mmlu, "gsm8k": _gsm8k, "mt-bench": _mt_bench}


def load(
    path: str | Path,
    *,
    tasks: tuple[str, ...] = TASKS,
    decontaminate: bool = True,
    prices: PriceCatalog | None = None,
) -> OutcomeTable:
    """RouteLLM's three benchmarks as one table (task column: mmlu, gsm8k, mt-bench)."""
    root = Path(path)
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise DataError(f"RouteLLM has no task(s) {sorted(unknown)}; it has {list(TASKS)}")
    parts = {t: _READERS[t](root, decontaminate) for t in tasks}
    n = [len(p["ids"]) for p in parts.values()]
    tokens_in = np.concatenate([p["tokens_in"] for p in parts.values()])
    tokens_out = np.concatenate([p["tokens_out"] for p in parts.values()])
    catalog = ROUTELLM_PRICES if prices is None else ROUTELLM_PRICES.overridden_by(prices)
    cost, price_notes = derive_costs(MODELS, tokens_in, tokens_out, catalog)
    responses = None
    if any(p["responses"] is not None for p in parts.values()):
        responses = np.concatenate(
            [
                p["responses"] if p["responses"] is not None else np.full((k, 2), "", object)
                for p, k in zip(parts.values(), n, strict=True)
            ]
        )
    notes = [f"source: RouteLLM {root}", *price_notes]
    if decontaminate:
        notes.append("contaminated prompts removed (RouteLLM's contaminated_prompts.jsonl)")
    if "mt-bench" in tasks:
        notes.append("mt-bench quality = mean judge score of both turns / 10")
    return OutcomeTable.build(
        MODELS,
        np.concatenate([p["ids"] for p in parts.values()]),
        np.concatenate([p["quality"] for p in parts.values()]),
        prompts=np.concatenate([p["prompts"] for p in parts.values()]),
        tasks=np.repeat(list(parts), n),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
        responses=responses,
        name="routellm",
        notes=notes,
    )
