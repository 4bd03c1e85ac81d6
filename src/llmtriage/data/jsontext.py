"""JSON text on the gateway's hot path: from outside (a client's body, an upstream's
reply), parsed fast and diagnosed exactly; and out, written fast.

orjson parses the common case several times faster than the json module, but refuses
some valid JSON: numbers past the float range and escapes of lone surrogates. Those go to
the json module, so that what is wrong is named by whoever validates the values (a token
count out of range, text that is not Unicode), and only text that is not JSON at all is
called so. An integer past 64 bits is read as the nearest float (orjson's reading), which
every count and limit here refuses as out of range all the same. Text nested deeper than
orjson's 1,024 levels is refused as such (the json module would recurse until Python's
stack limit stops it).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: The deepest nesting of arrays and objects orjson parses.
MAX_DEPTH = 1024
TOO_DEEP = f"arrays or objects nested more than {MAX_DEPTH} levels deep"


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: bytes | str, constants: bool = True) -> Any:
    """The parsed value; raises ValueError (json.JSONDecodeError) if it is not JSON, or is
    JSON this reader refuses (nested too deep, an integer of thousands of digits).

    ``constants``: whether Python's ``NaN`` and ``Infinity`` are read (Triage's own files
    hold them, written by the json module); a client's text is held to JSON, in which a
    NaN would otherwise reach a validator that can only say it is out of range."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise ValueError(TOO_DEEP) from None
    try:
        return json.loads(text) if constants else json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's 4,300-digit limit
            raise ValueError("a number with thousands of digits") from None
        raise


def dumps(value: Any) -> bytes:
    """UTF-8 JSON of ``value``; numpy numbers (a trace's measurements) are written as the
    numbers they are, and a non-finite float as null."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
