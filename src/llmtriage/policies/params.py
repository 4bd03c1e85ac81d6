"""Policy parameters, checked where they enter: a ``--param``, a config's ``params``, an
artifact's saved parameters.

A policy's constructor annotations say what each parameter may be (the types below carry
their ranges), so one check here refuses ``knn.k=abc``, ``knn.k=-3`` or ``lam=nan`` with
the parameter's name, instead of a fit failing later, deep inside numpy, or quietly
doing something else.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import Field, PydanticSchemaGenerationError, TypeAdapter, ValidationError

#: How many of something (neighbours, folds, epochs, calls): at least one.
Count = Annotated[int, Field(ge=1)]
# Counts that size a fitted policy's arrays or its training time are bounded, so a parameter
# cannot ask for gigabytes (a million bins) or days (a billion epochs).
#: Latent or projected dimensions (a factorisation's, a bandit's context).
Dimensions = Annotated[int, Field(ge=1, le=1024)]
#: Passes of an iterative fit (epochs, rating iterations).
Iterations = Annotated[int, Field(ge=1, le=100_000)]
#: How finely a distribution is kept (quantile samples, bands of predictions).
Resolution = Annotated[int, Field(ge=1, le=1024)]
#: A share or probability, 0 to 1.
Share = Annotated[float, Field(ge=0.0, le=1.0)]
#: A strictly positive finite number (a regularisation strength, a temperature).
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
#: Zero or more, finite.
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
#: Any finite number (a willingness to pay, a raw confidence threshold).
Finite = Annotated[float, Field(allow_inf_nan=False)]
#: A seed for numpy's generators, which refuse negative ones.
Seed = Annotated[int, Field(ge=0, lt=2**63)]
#: "Choose it by cross-validation on the training split."
Auto = Literal["auto"]


@cache
def _adapters(cls: type) -> dict[str, TypeAdapter | None]:
    """Each constructor parameter's validator; None where its type is not plain data (a
    router object, given by its builder)."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    out: dict[str, TypeAdapter | None] = {}
    for name in inspect.signature(cls.__init__).parameters:
        if name in hints and name != "return":
            try:
                out[name] = TypeAdapter(hints[name])
            except PydanticSchemaGenerationError:
                out[name] = None
    return out


def checked(cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every value of a known parameter validated (and coerced: 3.0 -> 3)
    against ``cls``'s annotations; a ValueError naming the first one that is not (its
    caller names the policy kind)."""
    adapters = _adapters(cls)
    out = dict(params)
    for name, value in params.items():
        adapter = adapters.get(name)
        if adapter is None:
            continue  # a builder's extra, or an object the builder made
        try:
            out[name] = adapter.validate_python(value)
        except ValidationError as exc:
            if isinstance(value, str):  # one name where a list of names is asked for
                try:
                    out[name] = adapter.validate_python([value])
                    continue
                except ValidationError:
                    pass
            raise ValueError(f"parameter {name}={value!r}: {_reason(exc)}") from None
    return out


def _reason(exc: ValidationError) -> str:
    """Pydantic's messages for the union's arms, without its tags and type names."""
    messages = dict.fromkeys(error["msg"] for error in exc.errors())
    return "; or ".join(messages)
