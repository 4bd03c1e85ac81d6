"""Agreement between models, on recorded answers: a confidence that pays for its voters.

A worked answer is trusted when other, independent models reach the same final answer (the
cross-model form of the mixture-of-thought cascades' vote). On GSM8K two cheap models agree
on about 90% of the problems and are then right about 98% of the time, while a learned
scorer of (query, answer) embeddings cannot check arithmetic at all. The voters are calls
like any other, so the signal is a new model column: the answering model's answers, with the
voters' cost, tokens and energy added and the slowest of them as its latency (all are
called at once). Thresholding it in a cascade then pays for the votes in every report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

import numpy as np

from llmtriage.data.table import OutcomeTable

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ANSWER_FIELD = re.compile(r'"answer"\s*:\s*("(?:[^"\\]|\\.)*"|[^,}\n]+)')
#: A bare choice letter in any wrapping: "A", "(b)", "['A)']".
_CHOICE = re.compile(r"^\W*\(?([A-Ea-e])\)?\W*$")


def final_answer(text: str) -> str:
    """The final answer of a worked solution, as a comparable key: the JSON ``"answer"``
    field when the model wrote one (ZeroEval's format), else the whole text; then its last
    number with separators removed ("1,000.0" -> "1000"), a bare choice letter ("['A)']" ->
    "a"), or its stripped lower-case text."""
    fields = _ANSWER_FIELD.findall(text)
    value = fields[-1] if fields else text
    if value.startswith('"'):
        try:
            value = json.loads(value)
        except ValueError:
            value = value.strip('"')
    numbers = _NUMBER.findall(str(value))
    if numbers:
        try:
            return f"{float(numbers[-1].replace(',', '')):g}"
        except ValueError:
            pass
    choice = _CHOICE.match(str(value).replace("\\n", " "))  # escaped newlines, as recorded
    if choice:
        return choice.group(1).lower()
    return str(value).strip().lower()


def answer_keys(table: OutcomeTable, columns: Sequence[int] | None = None,
                key: Callable[[str], str] = final_answer) -> np.ndarray:
    """The comparable final answer of every recorded response, one row per model column
    (all of them by default)."""
    if table.responses is None:
        raise ValueError(f"table {table.name!r} has no responses to compare")
    columns = range(table.n_models) if columns is None else columns
    return np.array([[key(str(t)) for t in table.responses[:, j]] for j in columns],
                    dtype=object)


def agreement_name(model: str, voters: Sequence[str]) -> str:
    return f"{model}+agree({','.join(voters)})"


def with_agreement(table: OutcomeTable, model: str, voters: Sequence[str],
                   key: Callable[[str], str] = final_answer) -> OutcomeTable:
    """The table plus the column ``model+agree(voters)``: ``model``'s answers, confidence =
    the share of voters whose final answer equals it (an empty answer agrees with nothing).
    Needs the table's responses."""
    cols = [table.model_index(m) for m in (model, *voters)]
    keys = answer_keys(table, cols, key)
    agree = (keys[1:] == keys[0]) & (keys[0] != "")
    outcomes = {c: getattr(table, c)[:, cols].sum(axis=1)
                for c in ("cost_usd", "tokens_in", "tokens_out", "energy_j")}
    outcomes["latency_ms"] = table.latency_ms[:, cols].max(axis=1)
    j = cols[0]
    return table.with_model(
        agreement_name(model, voters), table.quality[:, j], table.responses[:, j],
        confidence=agree.mean(axis=0), **outcomes,
    ).with_notes(f"confidence of {agreement_name(model, voters)}: share of voters agreeing "
                 f"with {model}'s final answer; the voters' cost is included")
