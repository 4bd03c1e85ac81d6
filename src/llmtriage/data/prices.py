"""The price catalog: USD per million input and output tokens, per model.

Sources that record no cost (RouteLLM, ZeroEval, arena tables, a user's own logs) get one
derived from token counts and these prices. The shipped table is dated and approximate;
users override it with their own file. Every derived cost names the price it used, so a
report can print exactly which numbers it rests on.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from llmtriage.data.errors import DataError, faults, repeated
from llmtriage.data.jsontext import loads

#: Characters per token where a source gives only text lengths (the usual English estimate).
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    source: str = ""
    #: The date its source gave it (its catalog's ``as_of``; "" when not said).
    as_of: str = ""

    def cost(self, tokens_in: np.ndarray, tokens_out: np.ndarray) -> np.ndarray:
        return (tokens_in * self.input + tokens_out * self.output) / 1e6


def normalize_name(model: str) -> str:
    """Fold provider spellings of one model together: case, 'org/' prefix, '@host' suffix."""
    name = model.strip().lower()
    name = name.split("@", 1)[0]
    return name


def _short_name(model: str) -> str:
    return normalize_name(model).rsplit("/", 1)[-1]


#: A snapshot's date at the end of a provider's model name (gpt-4o-2024-08-06,
#: claude-3-haiku-20240307).
_SNAPSHOT = re.compile(r"-(\d{4})-?(\d{2})-?(\d{2})$")


def _undated(name: str) -> tuple[str, str] | None:
    """(the name without its snapshot date, the date as YYYYMMDD), or None if undated."""
    found = _SNAPSHOT.search(name)
    return (name[: found.start()], "".join(found.groups())) if found else None


#: A price in USD per million tokens.
Usd = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class PriceRow(BaseModel):
    """One model's prices as a file gives them."""

    input: Usd
    output: Usd
    source: str | None = None


class PriceFile(BaseModel):
    """The JSON catalog: ``{"as_of": ..., "models": {name: {input, output, source}}}``."""

    models: dict[str, Any]  # each a PriceRow, read one by one
    as_of: str = ""


@dataclass(frozen=True)
class PriceCatalog:
    prices: dict[str, Price]
    origin: str = "built-in"

    @classmethod
    def default(cls) -> PriceCatalog:
        text = resources.files("llmtriage.data").joinpath("prices.json").read_text()
        return cls._from_json(json.loads(text), origin="built-in")

    @classmethod
    def from_file(cls, path: str | Path) -> PriceCatalog:
        """Read a JSON catalog (the shipped format, or LiteLLM's price map) or a CSV with
        model,input,output."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"price file {path} does not exist")
        try:
            if path.suffix.lower() == ".csv":
                # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark.
                with path.open(newline="", encoding="utf-8-sig") as f:
                    reader = csv.DictReader(f)
                    rows = list(reader)
                    header = reader.fieldnames or []
                missing = {"model", "input", "output"} - set(header if rows else ())
                if missing:
                    hint = (" (its columns are separated by ';': a price file's by ',')"
                            if any(";" in column for column in header) else "")
                    raise DataError(f"price file {path} lacks columns {sorted(missing)}"
                                    f"{hint}")
                names = [(r["model"] or "").strip() for r in rows]
                if "" in names:
                    raise DataError(f"price file {path}: row {names.index('') + 2} has no "
                                    "model name")
                if twice := repeated(names):
                    raise DataError(f"price file {path}: model(s) {twice} priced twice; "
                                    "give each model one row")
                data = {"models": {n: r for n, r in zip(names, rows, strict=True)}}
            else:
                text = path.read_text(encoding="utf-8-sig")
                data = loads(text)
                json.loads(text, object_pairs_hook=lambda pairs: _once(pairs, path))
        except UnicodeDecodeError:
            raise DataError(f"price file {path} is not UTF-8 text") from None
        except ValueError as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"price file {path} is malformed: {exc}") from None
        return cls._from_json(data, origin=str(path))

    @classmethod
    def _from_json(cls, data: object, origin: str) -> PriceCatalog:
        try:
            checked = PriceFile.model_validate(_from_litellm(data, origin))
        except ValidationError as exc:
            raise DataError(f"price catalog {origin}: {faults(exc.errors())}") from None
        prices = {}
        for name, row in checked.models.items():  # each on its own, to name the model
            try:
                price = PriceRow.model_validate(row)
            except ValidationError as exc:
                raise DataError(f"price catalog {origin}: model {name!r}: "
                                f"{faults(exc.errors())}") from None
            prices[name] = Price(price.input, price.output, price.source or origin,
                                 checked.as_of)
        return cls(prices, origin=origin)

    @classmethod
    def default_with(cls, overrides: PriceCatalog | None) -> PriceCatalog:
        """The built-in catalog, with a user's prices (if any) taking precedence."""
        return cls.default() if overrides is None else cls.default().overridden_by(overrides)

    def overridden_by(self, other: PriceCatalog) -> PriceCatalog:
        merged = {**self.prices, **other.prices}
        return PriceCatalog(merged, other.origin)

    def lookup(self, model: str) -> Price | None:
        """The price of a model by exact name, then normalized, then without its org prefix,
        then, for a name without a snapshot date (the provider's alias, ``gpt-4o`` or
        ``claude-3-5-sonnet-latest``), its latest dated snapshot listed; a price found under
        another name says which."""
        if model in self.prices:
            return self.prices[model]
        keys = (normalize_name(model), _short_name(model))
        for key in keys:
            for name, price in self.prices.items():
                if key in (normalize_name(name), _short_name(name)):
                    return price
        aliases = {k.removesuffix("-latest") for k in keys}  # claude-3-5-sonnet-latest
        snapshots = sorted((dated[1], name) for name in self.prices
                           if (dated := _undated(_short_name(name))) and dated[0] in aliases)
        if not snapshots:
            return None
        name = snapshots[-1][1]
        price = self.prices[name]
        return replace(price, source=f"{price.source}, listed as {name}")

    def require(self, models: list[str] | tuple[str, ...]) -> dict[str, Price]:
        found = {m: self.lookup(m) for m in models}
        missing = [m for m, p in found.items() if p is None]
        if missing:
            raise DataError(
                "no price known for model(s) "
                + ", ".join(repr(m) for m in missing)
                + "; give their USD per million input/output tokens in a --prices file "
                "(JSON like the built-in catalog, or CSV with columns model,input,output)"
            )
        return {m: p for m, p in found.items() if p is not None}

    def describe(self, used: dict[str, Price]) -> list[str]:
        """One note per price used, for the report's provenance."""
        return [
            f"price {m}: ${p.input:g} in / ${p.output:g} out per 1M tokens, {p.source}"
            + (f" (as of {p.as_of})" if p.as_of else "")
            for m, p in used.items()
        ]


#: LiteLLM's price map prices a token, this catalog a million.
_LITELLM = ("input_cost_per_token", "output_cost_per_token")


def _from_litellm(data: object, origin: str) -> object:
    """LiteLLM's price map (``model_prices_and_context_window.json``: model -> per-token
    costs, beside its ``sample_spec``) in this catalog's shape; any other data unchanged.
    Its entries without both per-token costs (images, audio, per-second pricing) are left
    out: they price no text tokens."""
    if not isinstance(data, dict) or "models" in data or not any(
            isinstance(v, dict) and _LITELLM[0] in v for v in data.values()):
        return data
    models = {}
    for name, entry in data.items():
        if name == "sample_spec" or not isinstance(entry, dict):
            continue
        costs = [entry.get(k) for k in _LITELLM]
        if all(isinstance(c, int | float) and not isinstance(c, bool) for c in costs):
            models[name] = {**{side: float(f"{cost * 1e6:.12g}")
                               for side, cost in zip(("input", "output"), costs, strict=True)},
                            "source": f"{origin} (LiteLLM's price map)"}
    return {"models": models}


def tokens_from_chars(chars: np.ndarray) -> np.ndarray:
    return np.asarray(chars, dtype=np.float64) / CHARS_PER_TOKEN


def derive_costs(
    models: tuple[str, ...],
    tokens_in: np.ndarray,
    tokens_out: np.ndarray,
    catalog: PriceCatalog,
) -> tuple[np.ndarray, list[str]]:
    """Per-outcome USD cost from (N, M) token counts, and the notes naming the prices used."""
    used = catalog.require(models)
    cost = np.empty(tokens_in.shape, dtype=np.float64, order="F")
    for j, m in enumerate(models):
        cost[:, j] = used[m].cost(tokens_in[:, j], tokens_out[:, j])
    return cost, catalog.describe(used)


def _once(pairs: list[tuple[str, Any]], path: Path) -> dict[str, Any]:
    """A JSON object whose keys are each given once: JSON parsers keep the last of two,
    so a model priced twice would be priced by whichever came second, silently."""
    if twice := repeated([k for k, _ in pairs]):
        raise DataError(f"price file {path}: {twice} given twice in one object; give each "
                        "once")
    return dict(pairs)
