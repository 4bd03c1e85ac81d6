"""Errors raised where data enters Triage; the CLI turns them into one clear line."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any


class DataError(ValueError):
    """A data file or argument is malformed; the message names what and where."""


def faults(errors: Sequence[Any], skip: int = 0) -> str:
    """At most five validation errors, each where it is (less ``skip`` leading parts of
    its location) and what is wrong. A location names fields and indices only: pydantic's
    tags for the members of a union ('function-after[valid_unicode(), constrained-str]')
    mean nothing to a client."""
    said: dict[str, None] = {}
    for e in errors:
        where = ".".join(str(p) for p in e["loc"][skip:]
                         if isinstance(p, int) or str(p).isidentifier())
        said.setdefault(f"{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(list(said)[:5])


def repeated(names: Sequence[str]) -> list[str]:
    """The names given more than once, sorted: what an error about duplicates names."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


#: Units a column's name ends with: a column named without one, or with another, is the
#: same measure in all likelihood (``latency``, ``latency_s`` for ``latency_ms``).
UNITS = ("_usd", "_ms", "_j")


def misspelt(keys: Iterable[str], known: Sequence[str]) -> tuple[str, str] | None:
    """(key, the field it meant) for the first of ``keys`` that is none of ``known`` but
    nearly spells one that ``keys`` lacks, or names its measure in another unit; None when
    there is none. Where unknown keys are a file's own metadata and left unread, a misspelt
    field would be left unread too, silently: this finds it."""
    keys = [str(k) for k in keys]
    absent = [k for k in known if k not in keys]
    for key in keys:
        if key in known:
            continue
        near = difflib.get_close_matches(key, absent, n=1, cutoff=0.8)
        if near:
            return key, near[0]
        for field in absent:
            unit = next((u for u in UNITS if field.endswith(u)), None)
            measure = field[: -len(unit)] if unit else None
            if measure and (key == measure or key.startswith(f"{measure}_")):
                return key, field
    return None
