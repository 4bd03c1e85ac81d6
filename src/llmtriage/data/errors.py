"""Errors raised where data enters Triage; the CLI turns them into one clear line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
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
