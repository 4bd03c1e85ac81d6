"""Turn any supported data source into an :class:`OutcomeTable`.

A source is ``FORMAT:PATH`` or a bare ``PATH`` whose format is recognised from its files.
Formats: ``routerbench``, ``routellm``, ``zeroeval``, ``llmrouter``, ``arena``, ``long``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llmtriage.data.errors import DataError
from llmtriage.data.loaders import arena, generic, llmrouter, routellm, routerbench, zeroeval
from llmtriage.data.prices import PriceCatalog
from llmtriage.data.splits import assign_missing_splits, decontaminate
from llmtriage.data.table import OutcomeTable

FORMATS = ("routerbench", "routellm", "zeroeval", "llmrouter", "arena", "long")
#: What each format can do with a prompt lacking some model's outcome, its default first:
#: ``refuse`` it (naming the first), ``drop`` the incomplete models (under 90% of prompts
#: answered) and then prompts, or score the hole ``wrong`` (0, as ZeroEval's official
#: summaries count it). The published wide formats not named here always drop.
MISSING = {"long": ("refuse", "drop"), "zeroeval": ("drop", "wrong")}


def sniff(path: Path) -> str:
    """The format of a path, from the files it holds."""
    if path.is_dir():
        if any(path.glob("*_correct_matrix.parquet")):
            return "zeroeval"
        if any(path.glob("dcrouter_*.json")):
            return "llmrouter"
        if any(path.glob("arena_bench_v1_*.csv")):
            return "arena"
        if (path / "mmlu" / "responses").is_dir() or (path / "gsm8k").is_dir():
            return "routellm"
        if any(path.glob("*.csv")):
            return "routerbench"
        raise DataError(f"{path}: cannot tell the data format; prefix it, e.g. routerbench:{path}")
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        return "routerbench"
    if suffix == ".csv":
        with path.open(encoding="utf-8", errors="replace") as f:  # the reader names bad bytes
            header = f.readline()
        return "routerbench" if "|total_cost" in header else "long"
    if suffix in (".jsonl", ".parquet"):
        return "long"
    raise DataError(f"{path}: cannot tell the data format from suffix {suffix!r}")


def parse_source(source: str) -> tuple[str, Path]:
    head, sep, tail = source.partition(":")
    if sep and head in FORMATS:
        if not tail.strip():  # Path("") is the working directory: not what was meant
            raise DataError(f"{source!r}: give the data's path after the prefix, e.g. "
                            f"{head}:PATH")
        return head, Path(tail)
    return "", Path(source)


def load_table(
    source: str,
    *,
    task: str | None = None,
    prices: PriceCatalog | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    missing: str | None = None,
) -> OutcomeTable:
    """Load a source; prompts with no split get one by hash (``test_fraction`` to test).

    ``missing``: what becomes of a prompt without an outcome for every model, where the
    format has a choice (see :data:`MISSING`); ``None`` is the format's default, its first."""
    fmt, path = parse_source(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    fmt = fmt or sniff(path)
    choices = MISSING.get(fmt, ("drop",))
    if missing is not None and missing not in choices:
        raise DataError(f"{path}: {fmt} data takes missing={' or '.join(choices)}, not "
                        f"{missing!r}")
    missing = missing or choices[0]
    readers: dict[str, Callable[[], OutcomeTable]] = {
        "routerbench": lambda: routerbench.load(path),
        "routellm": lambda: routellm.load(path, prices=prices),
        "zeroeval": lambda: zeroeval.load(path, task=task or "gsm", prices=prices,
                                          missing=missing),
        "llmrouter": lambda: llmrouter.load(path, prices=prices),
        "arena": lambda: arena.load(path, prices=prices),
        "long": lambda: generic.load(path, prices=prices, missing=missing),
    }
    try:
        table = readers[fmt]()
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        # A file of the right name whose inside is not what the format's files hold: the
        # loaders check what they can name; anything else still ends as one line.
        raise DataError(f"{path}: not {fmt} data as Triage reads it "
                        f"({type(exc).__name__}: {exc})") from None
    if task and fmt != "zeroeval":
        table = table.filter_task(task)
    return decontaminate(assign_missing_splits(table, test_fraction=test_fraction, seed=seed))


__all__ = ["FORMATS", "MISSING", "load_table", "parse_source", "sniff"]
