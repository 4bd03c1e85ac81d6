"""Prompt sets with gold answers: the built-in probe set, or a user's JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
)

from llmtriage.data.errors import DataError, faults, misspelt
from llmtriage.data.jsontext import loads
from llmtriage.probes.benchmarks import SHARED
from llmtriage.probes.builtin import builtin_probes
from llmtriage.probes.graders import GRADERS
from llmtriage.probes.types import Probe

#: Appended to every probe question: small models answer tersely when asked to.
INSTRUCTION = "Answer with only the final answer, no explanation."


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


#: Text a user file must give (numbers are taken as their text, "42" for 42).
Text = Annotated[str, AfterValidator(_not_blank)]


class ProbeRow(BaseModel):
    """One line of a user's prompt set."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: Text
    question: Text
    answer: Text
    grader: Literal[tuple(GRADERS)] = "alias"  # type: ignore[valid-type]
    aliases: list[Text] = []
    kind: str = ""
    difficulty: str = ""
    verbatim: StrictBool = False
    max_tokens: Annotated[StrictInt, Field(ge=1, le=512)] | None = None


def load_probes(source: str | None = None) -> list[Probe]:
    """``None`` or ``"builtin"``: the built-in set; ``crux:DIR`` or ``arc:DIR``: a public
    benchmark's questions (see :mod:`llmtriage.probes.benchmarks`). Otherwise a JSONL file,
    one object per line with ``id``, ``question``, ``answer``, and optional ``grader``
    (number, alias, choice, literal; default alias), ``aliases``, ``kind``, ``difficulty``,
    ``verbatim`` and ``max_tokens`` (1-512)."""
    if source in (None, "builtin"):
        return builtin_probes()
    name, _, where = str(source).partition(":")
    if name in SHARED and where:
        return SHARED[name](Path(where))
    path = Path(source)
    if not path.is_file():
        raise DataError(f"prompt set {path} does not exist")
    probes, seen = [], set()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"prompt set {path} is not UTF-8 text") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = loads(line)
        except ValueError as exc:
            raise DataError(f"{path}:{n}: invalid JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise DataError(f"{path}:{n}: each line is one JSON object (id, question, "
                            f"answer, ...), not {type(fields).__name__}")
        if near := misspelt(fields, list(ProbeRow.model_fields)):
            raise DataError(f"{path}:{n}: unknown key {near[0][:40]!r}: did you mean "
                            f"{near[1]!r}? (keys unlike any probe field are kept as "
                            "metadata, unread)")
        try:
            row = ProbeRow.model_validate(fields)
        except ValidationError as exc:
            raise DataError(f"{path}:{n}: {faults(exc.errors())}") from None
        if row.id in seen:
            raise DataError(f"{path}:{n}: duplicate id {row.id!r}")
        seen.add(row.id)
        probes.append(Probe(row.id, row.question, row.answer, row.grader, tuple(row.aliases),
                            row.kind, row.difficulty, row.verbatim, row.max_tokens))
    if not probes:
        raise DataError(f"prompt set {path} is empty")
    return probes


def prompt_of(probe: Probe) -> str:
    return probe.question if probe.verbatim else f"{probe.question}\n{INSTRUCTION}"


__all__ = ["INSTRUCTION", "Probe", "builtin_probes", "load_probes", "prompt_of"]
