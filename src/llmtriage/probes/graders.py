"""Exact graders: is a model's answer right?

Small models pad their answers ("17 * 23 = 391", "The capital is Paris."), so each grader
reads the first non-empty line and looks for the answer in it, strictly: a number must equal
the gold number, a short answer must appear as whole words, a letter must be the first
standalone choice letter.
"""

from __future__ import annotations

import ast
import re
import unicodedata

#: A number, with commas only as thousands separators ("12,345" but not "3,91").
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
#: A standalone choice letter A-D (not the "A" of "Answer").
CHOICE_LETTER = re.compile(r"(?<![A-Za-z])([A-D])(?![A-Za-z])")


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _to_float(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def grade_number(answer: str, gold: str) -> bool:
    """The last number on the first line equals the gold number."""
    numbers = _NUMBER.findall(first_line(answer))
    if not numbers:
        return False
    value, target = _to_float(numbers[-1]), _to_float(gold)
    return value is not None and target is not None and abs(value - target) < 1e-9


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9 ]+", " ", text.lower())
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})


def grade_alias(answer: str, gold: str, aliases: tuple[str, ...] = ()) -> bool:
    """One of the accepted answers appears, as whole words, on the first line."""
    line = f" {normalize(first_line(answer))} "
    return any(f" {normalize(a)} " in line for a in (gold, *aliases) if normalize(a))


def grade_choice(answer: str, gold: str) -> bool:
    """The first standalone letter A-D on the first line is the gold letter."""
    match = CHOICE_LETTER.search(first_line(answer))
    return bool(match) and match.group(1) == gold.strip().upper()


#: The longest answer line the literal grader parses (``ast.literal_eval`` of a hostile
#: nesting depth is slow and can overflow the stack).
MAX_LITERAL = 2000


def _literal(text: str) -> object:
    """A Python literal's value, or the text itself normalised when it is not one."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return " ".join(text.split())


def grade_literal(answer: str, gold: str) -> bool:
    """The answer's Python literal equals the gold one (CRUXEval's output prediction).
    Small models wrap it ("assert f(1) == 2", backticks, a trailing period); the value
    after the last ``==`` on the first line of code is compared, as a value (so "[1,2]"
    and "[1, 2]" agree, and "'a'" and '"a"' do)."""
    line = next((ln.strip() for ln in answer.splitlines()
                 if ln.strip() and not ln.strip().startswith("```")
                 and ln.strip().upper() not in ("[PYTHON]", "[/PYTHON]")), "")
    if "==" in line:
        line = line.rsplit("==", 1)[1]
    line = line.strip(" `").rstrip(".;").strip(" `")
    if len(line) > MAX_LITERAL:
        return False
    return _literal(line) == _literal(gold.strip())


GRADERS = {"number": grade_number, "alias": grade_alias, "choice": grade_choice,
           "literal": grade_literal}
