"""JSON on the hot path: orjson where it can, the json module for valid JSON it refuses."""

import json
import math

import numpy as np
import pytest

from llmtriage.data.jsontext import dumps, loads


@pytest.mark.parametrize("text", [b'{"n": 1e999}', b'{"s": "\\ud800"}',
                                  '{"s": "caf\\u00e9"}', b'[1, 2.5, null, true]'])
def test_valid_json_parses_as_the_json_module_parses_it(text):
    assert repr(loads(text)) == repr(json.loads(text))


def test_an_integer_past_64_bits_is_read_as_the_nearest_float():
    assert loads(b'{"n": 1180591620717411303424}') == {"n": float(2**70)}


@pytest.mark.parametrize("text", [b"{not json", b"\xff\xfe{}", b"", b'{"a": 1} trailing'])
def test_what_is_not_json_is_a_value_error(text):
    with pytest.raises(ValueError):
        loads(text)


@pytest.mark.parametrize("text, says", [
    (b"[" * 1025 + b"]" * 1025, "nested more than 1024"),
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested more than 1024"),
    (b"[" * 1025 + b"1e999" + b"]" * 1025, "nested more than 1024"),  # the json module's turn
    (b'{"n": ' + b"7" * 5000 + b"}", "thousands of digits"),
])
def test_what_this_reader_refuses_is_a_value_error_that_says_why(text, says):
    with pytest.raises(ValueError, match=says):
        loads(text)
    assert loads(b"[" * 1024 + b"]" * 1024)  # as deep as it goes


def test_numpy_numbers_are_written_as_numbers_and_non_finite_as_null():
    value = {"f": np.float64(0.25), "g": np.float32(0.5), "i": np.int64(3),
             "nan": float("nan"), "inf": np.float64(math.inf), "list": [np.float64(1.0)]}
    assert json.loads(dumps(value)) == {"f": 0.25, "g": 0.5, "i": 3, "nan": None,
                                        "inf": None, "list": [1.0]}


def test_a_clients_text_is_held_to_json_while_triages_own_files_keep_their_infinities():
    """The collection journal records a cut-off answer's confidence as -Infinity (the json
    module's spelling): it reads back; a client's body saying NaN is refused as not JSON."""
    assert math.isinf(loads(b'{"confidence": -Infinity}')["confidence"])
    for text in (b'{"t": NaN}', b'[Infinity]', b'[-Infinity]'):
        with pytest.raises(ValueError, match="is not a JSON number"):
            loads(text, constants=False)
    assert loads(b'{"t": 1e400}', constants=False)["t"] == math.inf  # a validator's to refuse
