"""Public benchmarks' questions as probes, so the local ladder answers the very questions
whose cloud outcomes are recorded (``triage collect --probes crux:DIR``), and the two can
be joined into one table (:mod:`llmtriage.data.joint`).

- ``crux``: ZeroEval's CRUXEval output prediction (``crux_questions.parquet``: 800
  questions with gold outputs). The question is asked as published, followed by the
  probes' "answer only" instruction; ZeroEval's own template instead asked for a JSON object
  with the reasoning and the answer, which a 135M model cannot keep to. Graded as a
  Python literal.
- ``arc``: RouterBench's ARC-Challenge (``arc_challenge_{train,test}.csv``), asked verbatim
  (the 5-shot prompt the cloud models saw). RouterBench publishes no gold letter; it is
  recovered from the recorded answers: the letter every model scored right gave, or, when
  none was right, the one letter no wrong model gave. Questions where neither settles it
  are left out (:func:`arc_gold` says how many).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from llmtriage.data.errors import DataError
from llmtriage.probes.graders import CHOICE_LETTER
from llmtriage.probes.types import Probe

#: Room for the literal and a model's "assert f(...) == " around it.
CRUX_MAX_TOKENS = 64
ARC_MAX_TOKENS = 8


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"benchmark probes: missing file {path}")
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None


def crux_probes(root: Path) -> list[Probe]:
    questions = _read(root / "crux_questions.parquet")
    if not {"id", "question", "answer"} <= set(questions.columns):
        raise DataError(f"{root}: crux_questions.parquet needs id, question and answer")
    return [Probe(str(r.id), str(r.question), str(r.answer), "literal", kind="crux",
                  max_tokens=CRUX_MAX_TOKENS)
            for r in questions.itertuples(index=False)]


def _unlist(text: object) -> str:
    """RouterBench stores a prompt or an answer as the repr of a one-item list."""
    text = str(text)
    try:
        value = ast.literal_eval(text) if text.startswith("[") and len(text) < 100_000 else text
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return str(value[0]) if isinstance(value, list) and value else str(value)


def _letter(response: object) -> str | None:
    match = CHOICE_LETTER.search(_unlist(response).strip())
    return match.group(1) if match else None


def arc_gold(frame: pd.DataFrame) -> tuple[pd.Series, dict[str, int]]:
    """Per row the recovered gold letter ("" where ambiguous), and how each was settled."""
    models = [c.removesuffix("|model_response") for c in frame.columns
              if c.endswith("|model_response") and c.removesuffix("|model_response") in frame]
    gold, how = [], {"right answers agree": 0, "the one letter no wrong answer gave": 0,
                     "ambiguous (left out)": 0}
    for _, row in frame.iterrows():
        right = {_letter(row[f"{m}|model_response"]) for m in models if row[m] == 1}
        wrong = {_letter(row[f"{m}|model_response"]) for m in models if row[m] == 0}
        right.discard(None)
        wrong.discard(None)
        left = set("ABCD") - wrong
        if len(right) == 1 and not right & wrong:
            gold.append(right.pop())
            how["right answers agree"] += 1
        elif not right and len(left) == 1:
            gold.append(left.pop())
            how["the one letter no wrong answer gave"] += 1
        else:
            gold.append("")
            how["ambiguous (left out)"] += 1
    return pd.Series(gold, index=frame.index), how


def arc_probes(root: Path) -> list[Probe]:
    probes = []
    for split in ("train", "test"):
        frame = _read(root / f"arc_challenge_{split}.csv")
        if not {"sample_id", "prompt"} <= set(frame.columns):
            raise DataError(f"{root}: arc_challenge_{split}.csv is not RouterBench's format")
        gold, _ = arc_gold(frame)
        probes += [Probe(str(sid), _unlist(prompt), letter, "choice", kind="arc-challenge",
                         verbatim=True, max_tokens=ARC_MAX_TOKENS)
                   for sid, prompt, letter in zip(frame["sample_id"], frame["prompt"], gold,
                                                  strict=True) if letter]
    return probes


#: ``NAME:DIR`` probe sources (``load_probes``).
SHARED: dict[str, Callable[[Path], list[Probe]]] = {"crux": crux_probes, "arc": arc_probes}
