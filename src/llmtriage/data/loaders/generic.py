"""The generic long format: one row per prompt and model. Users bring their logs in it;
Triage writes it (``collect``, the gateway's export).

Required columns: ``prompt_id``, ``model``, ``quality`` (0..1). Optional: ``prompt``,
``task``, ``split`` (per prompt), and ``cost_usd``, ``tokens_in``, ``tokens_out``,
``latency_ms``, ``energy_j``, ``confidence``, ``response`` (per outcome), and
``confidence_signal`` (the statistic ``confidence`` holds, one for the whole file). Files
are CSV, JSON lines (``.jsonl``) or Parquet, told apart by their suffix.

Where ``cost_usd`` is absent it is derived from ``tokens_in``/``tokens_out``, or from the
prompt and response lengths at four characters a token, and the price catalog.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmtriage.data.errors import DataError, misspelt
from llmtriage.data.files import write_atomic
from llmtriage.data.loaders._wide import MIN_MODEL_COVERAGE
from llmtriage.data.prices import PriceCatalog, derive_costs, tokens_from_chars
from llmtriage.data.table import OUTCOME_COLUMNS, OutcomeTable

REQUIRED = ("prompt_id", "model", "quality")
PER_PROMPT = ("prompt", "task", "split")
#: Every column the format reads (``confidence_signal``: the statistic ``confidence`` holds).
COLUMNS = (*REQUIRED, *PER_PROMPT, *OUTCOME_COLUMNS, "response", "confidence_signal")
SUFFIXES = (".csv", ".jsonl", ".parquet")
#: Where other tools keep a prompt's text: named in the note of a table with no ``prompt``.
TEXT_COLUMN_NAMES = ("question", "query", "input", "instruction", "text", "user_prompt")
#: Columns other tools write, each read as the format's column it names where the file has
#: no column of that name: OpenAI's and Anthropic's usage counts, and a confidence column
#: named by its statistic (which then is the file's ``confidence_signal``).
ALIASES = {"prompt_tokens": "tokens_in", "input_tokens": "tokens_in",
           "completion_tokens": "tokens_out", "output_tokens": "tokens_out",
           "mean_logprob": "confidence", "min_logprob": "confidence"}


def read_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype={"prompt_id": str, "model": str})
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype={"prompt_id": str, "model": str},
                                encoding="utf-8-sig")  # a byte-order mark or not
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read as {suffix[1:]}: {exc}") from None
    raise DataError(f"{path}: unknown suffix {suffix!r}; the long format is one of {SUFFIXES}")


def _first_row(mask: pd.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def numeric_column(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A column as numbers; a DataError naming the first entry that is not one (an empty
    entry is NaN: not recorded)."""
    kind = frame[column].dtype.kind
    if kind in "mM":  # pandas would read a date or a duration as its nanoseconds
        raise DataError(f"{path}: column {column!r} holds {frame[column].dtype} values, "
                        "not numbers")
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = _first_row(bad)
        raise DataError(
            f"{path}: column {column!r} has a non-number {frame[column].iloc[row]!r} "
            f"(data row {row + 1})"
        )
    return values.to_numpy(dtype=np.float64)


#: Columns read as text: numbers are taken as their text, anything else is refused.
TEXT = ("prompt_id", "model", *PER_PROMPT, "response", "confidence_signal")
#: What ``pandas.api.types.infer_dtype`` says of a column of text, numbers or both.
_TEXTLIKE = {"string", "empty", "integer", "floating", "mixed-integer", "mixed-integer-float",
             "boolean", "decimal"}


def _text_column(frame: pd.DataFrame, column: str, path: Path) -> None:
    """Decode Parquet's byte strings and refuse what is not text (an object or a list in a
    JSON line, a date), naming the first such entry; stringified, it passed as a prompt."""
    values = frame[column]
    if values.dtype != object:
        if values.dtype.kind in "mM":
            raise DataError(f"{path}: column {column!r} holds {values.dtype} values, not text")
        return
    kind = pd.api.types.infer_dtype(values, skipna=True)  # one pass in C, not per row
    if kind in _TEXTLIKE:
        return
    is_bytes = values.map(lambda v: isinstance(v, bytes))
    if is_bytes.any():
        try:
            frame[column] = values.where(~is_bytes, values[is_bytes].map(bytes.decode))
        except UnicodeDecodeError:
            row = _first_row(is_bytes & ~values.map(_utf8))
            raise DataError(f"{path}: column {column!r} has bytes that are not UTF-8 text "
                            f"(data row {row + 1})") from None
        if pd.api.types.infer_dtype(frame[column], skipna=True) in _TEXTLIKE:
            return
    odd = ~frame[column].map(lambda v: v is None or v is pd.NA or isinstance(
        v, str | int | float | np.number | np.bool_))
    if not odd.any():
        return
    row = _first_row(odd)
    shown = repr(frame[column].iloc[row])
    raise DataError(f"{path}: column {column!r} has a non-text value "
                    f"{shown if len(shown) <= 60 else shown[:57] + '...'} (data row {row + 1})")


def _utf8(value: object) -> bool:
    if not isinstance(value, bytes):
        return True
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _aliased(frame: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The frame with each :data:`ALIASES` column renamed to the column it names, where that
    is absent, and a note for each. Two aliases of one absent column are refused: which of
    them holds it cannot be told."""
    renamed: dict[str, str] = {}
    for alias, column in ALIASES.items():
        if alias not in frame.columns or column in frame.columns:
            continue
        if column in renamed.values():
            first = next(a for a, c in renamed.items() if c == column)
            raise DataError(f"{path}: columns {first!r} and {alias!r} both name {column!r}; "
                            f"keep one, or name it {column!r}")
        renamed[alias] = column
    notes = [f"column {a!r} read as {c!r}" for a, c in renamed.items()]
    frame = frame.rename(columns=renamed)
    signal = next((a for a, c in renamed.items() if c == "confidence"), None)
    if signal is not None and "confidence_signal" not in frame.columns:
        frame["confidence_signal"] = signal
    return frame, notes


def _checked(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The frame (its column names already lower case, without spaces) with ids (as text)
    and splits in canonical form; refuses rows without a prompt id or model, splits other
    than train/test, and a prompt whose rows disagree on its text, split or task (two
    prompts sharing an id, say from files concatenated, would be merged into one, or
    misfiled)."""
    if frame.empty:
        raise DataError(f"{path}: no data rows (a header at most)")
    if frame.columns.duplicated().any():
        twice = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise DataError(f"{path}: column(s) {twice} given twice (names are read without "
                        "case or surrounding spaces)")
    if near := misspelt(frame.columns, COLUMNS):
        raise DataError(f"{path}: column {near[0][:40]!r} is not read: did you mean "
                        f"{near[1]!r}? (other columns unlike the long format's are left "
                        "unread)")
    for column in TEXT:
        if column in frame.columns:
            _text_column(frame, column, path)
    for column in ("prompt_id", "model"):
        if column not in frame.columns:
            continue
        blank = frame[column].isna().to_numpy() | (
            frame[column].astype(str).str.strip() == "").to_numpy()
        if blank.any():
            raise DataError(f"{path}: {column} is missing in data row {_first_row(blank) + 1}")
        frame[column] = frame[column].astype(str)
    if "split" in frame.columns:
        split = frame["split"].fillna("").astype(str).str.strip().str.lower()
        bad = ~split.isin(["train", "test", ""])
        if bad.any():
            row = _first_row(bad)
            raise DataError(f"{path}: split must be 'train' or 'test' (or empty: assigned by "
                            f"hash); data row {row + 1} has {frame['split'].iloc[row]!r}")
        frame["split"] = split
    for column in PER_PROMPT:
        if column in frame.columns and "prompt_id" in frame.columns:
            values = frame[column].fillna("").astype(str)
            kinds = values.groupby(frame["prompt_id"], sort=False).nunique()
            if (kinds > 1).any():
                prompt = kinds.index[_first_row(kinds > 1)]
                seen = [v if len(v) <= 60 else v[:57] + "..." for v in
                        sorted(values[frame["prompt_id"] == prompt].unique())[:3]]
                raise DataError(f"{path}: prompt {prompt!r} has rows with different "
                                f"{column}s {seen}; a prompt has one")
    return frame


def load(path: str | Path, *, prices: PriceCatalog | None = None,
         missing: str = "refuse") -> OutcomeTable:
    """``missing="refuse"`` (the default) refuses a prompt without an outcome for every
    model, naming the first; ``"drop"`` keeps the complete cases as ZeroEval's loader does
    (models with outcomes for under 90% of prompts, then prompts still lacking one), and
    the table's notes say what went."""
    if missing not in ("refuse", "drop"):
        raise DataError(f"missing must be 'refuse' or 'drop' for a long-format file, not "
                        f"{missing!r}")
    path = Path(path)
    frame = read_frame(path).rename(columns=lambda c: str(c).strip().lower())
    frame, aliased = _aliased(frame, path)
    frame = _checked(frame, path)
    absent = [c for c in REQUIRED if c not in frame.columns]
    if absent:
        raise DataError(
            f"{path}: missing required column(s) {absent}; the long format needs "
            f"{list(REQUIRED)} (found {list(frame.columns)})"
        )
    frame = frame.reset_index(drop=True)
    quality = numeric_column(frame, "quality", path)
    if np.isnan(quality).any():
        row = _first_row(np.isnan(quality))
        raise DataError(f"{path}: quality is missing (NaN) in data row {row + 1}")
    if ((quality < 0) | (quality > 1)).any():
        row = _first_row((quality < 0) | (quality > 1))
        raise DataError(
            f"{path}: quality must lie in [0, 1]; data row {row + 1} has {float(quality[row]):g} "
            "(rescale scores such as 1-10 judge ratings first)"
        )
    dup = frame.duplicated(["prompt_id", "model"])
    if dup.any():
        row = _first_row(dup)
        raise DataError(
            f"{path}: prompt {frame['prompt_id'][row]!r} has two rows for model "
            f"{frame['model'][row]!r} (data row {row + 1})"
        )

    # Read before any rows are dropped, so that a bad entry is named by its row in the file.
    flat = {c: numeric_column(frame, c, path) for c in OUTCOME_COLUMNS if c in frame.columns}
    dropped: list[str] = []
    if missing == "drop":
        kept, dropped = _complete_cases(frame, path)
        frame, quality = frame.loc[kept].reset_index(drop=True), quality[kept]
        flat = {c: values[kept] for c, values in flat.items()}
    prompt_codes, prompt_ids = pd.factorize(frame["prompt_id"], sort=False)
    model_codes, models = pd.factorize(frame["model"], sort=False)
    n, m = len(prompt_ids), len(models)
    if len(frame) != n * m:
        # Found from the rows alone: a prompts x models mask of a sparse file (each prompt
        # with its own model) would be gigabytes for a file of kilobytes.
        i = int(np.flatnonzero(np.bincount(prompt_codes, minlength=n) < m)[0])
        j = int(np.flatnonzero(np.bincount(model_codes[prompt_codes == i], minlength=m) == 0)[0])
        raise DataError(
            f"{path}: every prompt needs an outcome for every model; {n * m - len(frame)} "
            f"missing, first: prompt {prompt_ids[i]!r}, model {models[j]!r} (--missing "
            "drop keeps the complete cases)"
        )

    def wide(values: np.ndarray) -> np.ndarray:
        out = np.full((n, m), np.nan, order="F")
        out[prompt_codes, model_codes] = values
        return out

    outcomes = {c: wide(values) for c, values in flat.items()}
    first = np.zeros(n, dtype=np.int64)
    first[prompt_codes[::-1]] = np.arange(len(frame))[::-1]
    per_prompt = {
        c: frame[c].fillna("").astype(str).to_numpy()[first] for c in PER_PROMPT if c in frame
    }
    responses = None
    if "response" in frame.columns:
        responses = np.empty((n, m), dtype=object)
        responses[prompt_codes, model_codes] = frame["response"].fillna("").astype(str).to_numpy()

    notes = [f"source: long-format file {path}", *aliased, *dropped]
    signal = None
    if "confidence_signal" in frame.columns:
        names = frame["confidence_signal"].dropna().astype(str).unique()
        if len(names) > 1:
            raise DataError(f"{path}: column 'confidence_signal' must name one signal for the "
                            f"whole table, not {sorted(names)[:3]}")
        signal = names[0] if len(names) else None
    cost = outcomes.get("cost_usd")
    if cost is None or np.isnan(cost).any():
        derived, price_notes = _derive_cost(outcomes, per_prompt, responses, tuple(models),
                                            prices, path)
        cost = derived if cost is None else np.where(np.isnan(cost), derived, cost)
        outcomes["cost_usd"] = np.asfortranarray(cost)
        notes += ["cost_usd derived from tokens and prices", *price_notes]
    table = OutcomeTable.build(
        [str(x) for x in models],
        [str(x) for x in prompt_ids],
        wide(quality),
        prompts=per_prompt.get("prompt"),
        tasks=per_prompt.get("task", ""),
        splits=per_prompt.get("split", ""),
        responses=responses,
        name=path.stem,
        notes=notes,
        confidence_signal=signal,
        **outcomes,
    )
    if not table.has_text:
        unread = [c for c in TEXT_COLUMN_NAMES if c in frame.columns]
        hint = f"; column {unread[0]!r} was left unread: name it 'prompt'" if unread else ""
        table = table.with_notes("no prompt text (no 'prompt' column, or an empty one): "
                                 "routers, which read it, are neither fitted nor replayed on "
                                 f"this table{hint}")
    return table


def _complete_cases(frame: pd.DataFrame, path: Path) -> tuple[np.ndarray, list[str]]:
    """The rows to keep: those of the models with outcomes for at least
    :data:`MIN_MODEL_COVERAGE` of prompts, on the prompts every one of them answered; and
    notes saying what was dropped. Counted from the rows (a prompt has one row per model:
    duplicates are refused before), never a prompts x models mask (a sparse file would make
    that gigabytes)."""
    prompt_codes, prompt_ids = pd.factorize(frame["prompt_id"], sort=False)
    model_codes, models = pd.factorize(frame["model"], sort=False)
    n = len(prompt_ids)
    coverage = np.bincount(model_codes, minlength=len(models)) / n
    weak = coverage < MIN_MODEL_COVERAGE
    notes = [f"dropped model {models[j]}: outcomes for only {coverage[j]:.0%} of prompts"
             for j in np.flatnonzero(weak)]
    kept = ~weak[model_codes]
    complete = np.bincount(prompt_codes[kept], minlength=n) == (~weak).sum()
    kept &= complete[prompt_codes]
    if not kept.any():
        raise DataError(f"{path}: no prompt has an outcome from every model that answered "
                        f"{MIN_MODEL_COVERAGE:.0%} of prompts or more: nothing is left to "
                        "compare")
    if lost := int(n - complete.sum()):
        notes.append(f"dropped {lost} of {n} prompts with a missing outcome (--missing drop)")
    return kept, notes


def _derive_cost(outcomes, per_prompt, responses, models, prices, path):
    tokens_in = outcomes.get("tokens_in")
    tokens_out = outcomes.get("tokens_out")
    if tokens_in is None or np.isnan(tokens_in).any():
        if "prompt" not in per_prompt:
            raise DataError(
                f"{path}: no cost_usd, and neither tokens_in nor prompt text to derive it from"
            )
        chars = np.array([len(p) for p in per_prompt["prompt"]], dtype=float)
        estimate = np.repeat(tokens_from_chars(chars)[:, None], len(models), axis=1)
        tokens_in = estimate if tokens_in is None else np.where(np.isnan(tokens_in), estimate,
                                                                tokens_in)
    if tokens_out is None or np.isnan(tokens_out).any():
        if responses is None:
            raise DataError(
                f"{path}: no cost_usd, and neither tokens_out nor response text to derive it from"
            )
        estimate = tokens_from_chars(np.vectorize(len, otypes=[float])(responses))
        tokens_out = estimate if tokens_out is None else np.where(np.isnan(tokens_out), estimate,
                                                                  tokens_out)
    return derive_costs(models, tokens_in, tokens_out, PriceCatalog.default_with(prices))


def write(table: OutcomeTable, path: str | Path) -> Path:
    """Write the table in the long format; a partial file never replaces a good one."""
    n, m = table.n_prompts, table.n_models
    columns: dict[str, np.ndarray] = {
        "prompt_id": np.repeat(table.prompt_ids, m),
        "prompt": np.repeat(table.prompts, m),
        "task": np.repeat(table.tasks, m),
        "split": np.repeat(table.splits, m),
        "model": np.tile(np.array(table.models, dtype=object), n),
        "quality": table.quality.reshape(-1, order="C"),
    }
    for c in OUTCOME_COLUMNS:
        if table.has(c):
            columns[c] = np.ascontiguousarray(getattr(table, c)).reshape(-1)
    if table.responses is not None:
        columns["response"] = table.responses.reshape(-1)
    if table.confidence_signal is not None:
        columns["confidence_signal"] = np.full(n * m, table.confidence_signal, dtype=object)
    return write_frame(pd.DataFrame(columns), path)


def check_suffix(path: Path) -> str:
    """The long-format file type ``path`` names (checked before work that writes one)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: the long format is written as one of {SUFFIXES}")
    return suffix


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write rows of the long format to CSV, JSONL or Parquet, atomically."""
    path = Path(path)
    suffix = check_suffix(path)

    def dump(tmp: str) -> None:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        elif suffix == ".jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False,
                          double_precision=15)
        else:
            frame.to_parquet(tmp, index=False)

    return write_atomic(path, dump)
