"""JSON text on the gateway's hot path: from outside (a client's body, an upstream's
reply), parsed fast and diagnosed exactly; and out, written fast.

orjson parses the common case several times faster than the json module, but refuses
some valid JSON: numbers past the float range and escapes of lone surrogates. Those go to
the json module, so that what is wrong is named by whoever validates the values (a token
count out of range, text that is not Unicode), and only text that is not JSON at all is
called so. An integer past 64 bits is read as the nearest float (orjson's reading), which
every count and limit here refuses as out of range all the same.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(text: bytes | str) -> Any:
    """The parsed value; raises ValueError (json.JSONDecodeError) if it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dumps(value: Any) -> bytes:
    """UTF-8 JSON of ``value``; numpy numbers (a trace's measurements) are written as the
    numbers they are, and a non-finite float as null."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
