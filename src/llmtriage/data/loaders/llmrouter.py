"""LLMRouter (UIUC): JSON lists of ``{question, scores: {model: score}}``.

``dcrouter_train.json`` and ``dcrouter_test.json`` keep their splits; ``default_llm.json``
gives each model's USD per million input and output tokens, which take precedence over the
built-in catalog. The files record no answer lengths, so output tokens are an assumption
(``output_tokens``, default 256), stated in the table's notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError, field_validator

from llmtriage.data.errors import DataError, faults
from llmtriage.data.jsontext import loads
from llmtriage.data.prices import Price, PriceCatalog, Usd, derive_costs, tokens_from_chars
from llmtriage.data.table import OutcomeTable

ASSUMED_OUTPUT_TOKENS = 256

T = TypeVar("T")


class Record(BaseModel):
    """One prompt: its text and each model's score in [0, 1]."""

    question: str
    scores: dict[str, float]

    @field_validator("scores")
    @classmethod
    def _shares(cls, scores: dict[str, float]) -> dict[str, float]:
        """Named here: an error's location drops a key that is not an identifier
        ('gpt-4o'), and a score says nothing without its model."""
        for model, score in scores.items():
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"model {model[:60]!r} scored {score}, not a share in [0, 1]")
        return scores


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input_price: Usd
    output_price: Usd


_RECORDS = TypeAdapter(list[Record])
_PRICES = TypeAdapter(dict[str, ModelPrice])


def _read(path: Path, shape: TypeAdapter[T]) -> T:
    if not path.is_file():
        raise DataError(f"LLMRouter data: missing file {path}")
    try:
        data = loads(path.read_text(encoding="utf-8-sig"))
    except ValueError as exc:  # not UTF-8, not JSON, or nested past reading
        raise DataError(f"{path}: invalid JSON: {exc}") from None
    try:
        return shape.validate_python(data)
    except ValidationError as exc:
        raise DataError(f"{path}: {faults(exc.errors())}") from None


def dataset_prices(root: Path) -> PriceCatalog:
    path = root / "default_llm.json"
    if not path.is_file():
        return PriceCatalog({})
    return PriceCatalog(
        {name: Price(v.input_price, v.output_price, f"{path.name}")
         for name, v in _read(path, _PRICES).items()},
        origin=str(path),
    )


def load(
    path: str | Path,
    *,
    output_tokens: float = ASSUMED_OUTPUT_TOKENS,
    prices: PriceCatalog | None = None,
) -> OutcomeTable:
    root = Path(path)
    records, splits = [], []
    for split in ("train", "test"):
        part = _read(root / f"dcrouter_{split}.json", _RECORDS)
        records.extend(part)
        splits.extend([split] * len(part))
    if not records:
        raise DataError(f"{root}: no LLMRouter records")
    models = tuple(records[0].scores)
    quality = np.empty((len(records), len(models)))
    for i, rec in enumerate(records):
        if set(rec.scores) != set(models):
            raise DataError(f"{root}: record {i} scores models {sorted(rec.scores)}, not "
                            f"{models}")
        quality[i] = [rec.scores[m] for m in models]
    prompts = np.array([r.question for r in records], dtype=object)
    tokens_in = np.repeat(
        tokens_from_chars(np.array([len(p) for p in prompts]))[:, None], len(models), axis=1
    )
    tokens_out = np.full(quality.shape, float(output_tokens))
    catalog = PriceCatalog.default().overridden_by(dataset_prices(root))
    catalog = catalog if prices is None else catalog.overridden_by(prices)
    cost, price_notes = derive_costs(models, tokens_in, tokens_out, catalog)
    return OutcomeTable.build(
        models,
        [f"llmrouter-{s}-{i}" for i, s in enumerate(splits)],
        quality,
        prompts=prompts,
        tasks="llmrouter",
        splits=splits,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
        name="llmrouter",
        notes=[
            f"source: LLMRouter {root}",
            f"output tokens assumed {output_tokens:g} per answer (not recorded)",
            *price_notes,
        ],
    )
