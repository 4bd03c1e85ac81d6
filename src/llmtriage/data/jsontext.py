"""JSON text from outside (a client's body, an upstream's reply), parsed fast and
diagnosed exactly.

orjson parses the common case several times faster than the json module, but refuses
some valid JSON: numbers past 64-bit integers or the float range, and escapes of lone
surrogates. Those go to the json module, so that what is wrong is named by whoever
validates the values (a token count out of range, text that is not Unicode), and only
text that is not JSON at all is called so.
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
