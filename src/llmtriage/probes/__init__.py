"""Prompt sets with gold answers: the built-in probe set, or a user's JSONL."""

from __future__ import annotations

from pathlib import Path

from llmtriage.data.errors import DataError
from llmtriage.data.jsontext import loads
from llmtriage.probes.benchmarks import SHARED
from llmtriage.probes.builtin import builtin_probes
from llmtriage.probes.graders import GRADERS
from llmtriage.probes.types import Probe

#: Appended to every probe question: small models answer tersely when asked to.
INSTRUCTION = "Answer with only the final answer, no explanation."


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
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"prompt set {path} is not UTF-8 text") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = loads(line)
        except ValueError as exc:
            raise DataError(f"{path}:{n}: invalid JSON: {exc}") from None
        missing = [k for k in ("id", "question", "answer") if not str(row.get(k, "")).strip()]
        if missing:
            raise DataError(f"{path}:{n}: missing {missing}")
        grader = row.get("grader", "alias")
        if grader not in GRADERS:
            raise DataError(f"{path}:{n}: unknown grader {grader!r}; use {sorted(GRADERS)}")
        if row["id"] in seen:
            raise DataError(f"{path}:{n}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        max_tokens = row.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int)
                                       or not 1 <= max_tokens <= 512):
            raise DataError(f"{path}:{n}: max_tokens must be an integer from 1 to 512")
        probes.append(Probe(str(row["id"]), str(row["question"]), str(row["answer"]), grader,
                            tuple(str(a) for a in row.get("aliases", ())),
                            str(row.get("kind", "")), str(row.get("difficulty", "")),
                            bool(row.get("verbatim", False)), max_tokens))
    if not probes:
        raise DataError(f"prompt set {path} is empty")
    return probes


def prompt_of(probe: Probe) -> str:
    return probe.question if probe.verbatim else f"{probe.question}\n{INSTRUCTION}"


__all__ = ["INSTRUCTION", "Probe", "builtin_probes", "load_probes", "prompt_of"]
