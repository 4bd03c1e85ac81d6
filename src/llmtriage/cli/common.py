"""What every command shares: the consoles, the options that mean the same in each, and the
boundary where bad input becomes one error line."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from llmtriage.data.errors import DataError
from llmtriage.data.loaders import load_table, parse_source
from llmtriage.data.prices import PriceCatalog
from llmtriage.data.table import OutcomeTable

if TYPE_CHECKING:
    from llmtriage.backends.catalog import Catalog

# Piped output gets a wide page instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
#: What bench and tune evaluate on: a table's split, or all of it.
Split = Literal["test", "train", "all"]
err = Console(stderr=True)

SourceArg = Annotated[
    str,
    typer.Argument(
        help="Data: a path, or FORMAT:PATH with FORMAT one of routerbench, routellm, zeroeval, "
        "llmrouter, arena, long.",
        show_default=False,
    ),
]
TaskOpt = Annotated[str | None, typer.Option(help="Keep one task (ZeroEval: gsm, crux, math-l5).")]
PricesOpt = Annotated[
    Path | None,
    typer.Option(help="Prices overriding the built-in catalog (JSON like it, CSV "
                      "model,input,output in USD per 1M tokens, or LiteLLM's "
                      "model_prices_and_context_window.json)."),
]
MissingOpt = Annotated[
    str | None,
    typer.Option("--missing", help="A prompt without an outcome for every model: refuse "
                 "(long-format files' default), drop (keep the complete cases: models with "
                 "90% of prompts or more, then the prompts they all answered; ZeroEval's "
                 "default) or wrong (ZeroEval: scored 0).", show_default=False),
]


CatalogOpt = Annotated[
    Path | None,
    typer.Option("--catalog", help="Model catalog (TOML); default: the embedded local ladder."),
]
ModelsOpt = Annotated[
    str | None, typer.Option("--models", help="Comma-separated catalog names (default: all).")
]


def load_data(source: str, task: str | None, prices: Path | None, seed: int = 0,
              missing: str | None = None) -> OutcomeTable:
    """A data source (``FORMAT:PATH``), priced by the file at ``prices`` where one is given."""
    catalog = PriceCatalog.from_file(prices) if prices else None
    return load_table(source, task=task, prices=catalog, seed=seed, missing=missing)


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def writable(path: Path, folder: bool = False, reads: Iterable[str | Path | None] = ()
             ) -> None:
    """Fail now, not after minutes of work, where ``path`` (a file, or with ``folder`` a
    folder) cannot be written: its folder is made if missing. ``reads``: the files the
    command reads (data sources as given), which it must not write over: `convert`ing a
    recording onto itself once replaced it with the columns the long format keeps."""
    for read in reads:
        if read is not None and _same_file(path, source_path(read)):
            fail(f"{path} is also an input of this command: writing it would replace what "
                  "is read; name another output")
    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{where}: cannot create the output folder ({exc.strerror})")
    try:  # tried, not os.access: root passes every permission check, not every write
        tempfile.TemporaryFile(dir=where).close()
    except OSError as exc:
        fail(f"{where}: cannot write in the output folder ({exc.strerror})")
    if not folder and path.is_dir():
        fail(f"{path} is a folder; name a file to write")


def source_path(read: str | Path) -> Path:
    """The file behind a data source (``FORMAT:PATH``) or a path."""
    if isinstance(read, Path):
        return read
    try:
        return parse_source(read)[1]
    except DataError:  # refused, with its reason, where it is loaded
        return Path(read)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def user_errors(*more: type[Exception]) -> Iterator[None]:
    """The CLI's boundary: bad input (and the given failures) end in one error line."""
    try:
        yield
    except (DataError, ValueError, *more) as exc:
        fail(str(exc))
    except OSError as exc:  # a file that cannot be read or written
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror
              else str(exc))


def policy_params(entries: list[str] | None, kinds: list[str] | None = None
                  ) -> dict[str, dict[str, object]]:
    """``--param KIND.key=value`` (or ``key=value`` when one kind is meant) by kind."""
    from llmtriage.policies.registry import parse_value

    out: dict[str, dict[str, object]] = {}
    for entry in entries or []:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            fail(f"--param {entry!r}: write KIND.key=value (or key=value with one policy)")
        kind, dot, name = key.rpartition(".")
        if not dot:
            if not kinds or len(kinds) != 1:
                fail(f"--param {entry!r}: name the policy kind it is for, as KIND.{key}=...")
            kind = kinds[0]
        given = out.setdefault(kind, {})
        if name in given:
            fail(f"--param {kind}.{name} is given twice; give each parameter once")
        given[name] = parse_value(value)
    return out


def warn_catalog(catalog: Catalog) -> None:
    """Say, before any call, which models' API key variables are not set, and which HTTP
    models have no price (their calls would count as free in costs, budgets and every
    cost-aware policy), with the built-in table's price where it knows the model."""
    for variable, names in catalog.unset_keys().items():
        err.print(f"[yellow]warning:[/] ${escape(variable)} is not set: calls to "
                  f"{escape(', '.join(names))} go without an API key")
    unpriced = [m for m in catalog.models
                if m.backend == "openai" and not (m.price_in or m.price_out)]
    if not unpriced:
        return
    table = PriceCatalog.default()
    for spec in unpriced:
        known = next(((n, p) for n in (spec.remote_name, spec.name)
                      if n and (p := table.lookup(n)) is not None), None)
        hint = (f" (the built-in table lists {known[0]} at ${known[1].input:g} / "
                f"${known[1].output:g} per 1M tokens)" if known else "")
        err.print(f"[yellow]warning:[/] model {escape(spec.name)} has no price_in or "
                  f"price_out: its calls count as free{escape(hint)}")


def model_catalog(path: Path | None, models: str | None) -> Catalog:
    """The catalog at ``path`` (default: the embedded ladder), keeping the named models."""
    from llmtriage.backends.catalog import load_catalog

    catalog = load_catalog(path)
    if models:
        catalog = catalog.select([m.strip() for m in models.split(",") if m.strip()])
    return catalog

