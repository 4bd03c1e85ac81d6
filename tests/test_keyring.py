"""Client keys: each configured key is found by its digest, anything else is refused."""

from __future__ import annotations

import pytest

from llmtriage.serving.config import ClientKey
from llmtriage.serving.guard import KeyRing, Refused, key_hash


@pytest.fixture(scope="module")
def ring() -> tuple[KeyRing, list[str]]:
    raw = [f"sk-test-{i:05d}-{'ab' * 8}" for i in range(2000)]
    return KeyRing([ClientKey(name=f"client{i}", sha256=key_hash(k))
                    for i, k in enumerate(raw)]), raw


def test_every_key_is_its_own_client(ring: tuple[KeyRing, list[str]]) -> None:
    keys, raw = ring
    for i in (0, 1, 999, 1999):
        assert keys.identify(f"Bearer {raw[i]}").name == f"client{i}"
        assert keys.identify(f"bearer  {raw[i]} ").name == f"client{i}"  # scheme, spaces


@pytest.mark.parametrize("header, code", [
    (None, "missing_api_key"), ("", "missing_api_key"), ("Basic abc", "missing_api_key"),
    ("Bearer ", "missing_api_key"), ("Bearer sk-test-00000", "invalid_api_key"),
    ("Bearer " + key_hash("sk-test-00000-" + "ab" * 8), "invalid_api_key"),  # a digest
])
def test_anything_else_is_refused(ring: tuple[KeyRing, list[str]], header: str | None,
                                  code: str) -> None:
    with pytest.raises(Refused) as refused:
        ring[0].identify(header)
    assert refused.value.status == 401 and refused.value.code == code


def test_no_keys_means_open() -> None:
    assert KeyRing([]).open and KeyRing([]).identify(None) is None


def test_triage_key_prints_an_entry_the_config_accepts_or_refuses_the_name(tmp_path) -> None:
    """A name with a quote was printed into the TOML as it was: an entry that broke the
    config file it was pasted into (or wrote keys of its own into it)."""
    import subprocess
    import sys
    import tomllib

    made = subprocess.run([sys.executable, "-m", "llmtriage.cli", "key", "--name", "ops.1"],
                          capture_output=True, text=True, timeout=60)
    token = made.stdout.split(": ", 1)[1].split()[0]
    entry = tomllib.loads(made.stdout[made.stdout.index("[[keys]]"):])["keys"][0]
    assert KeyRing([ClientKey(**entry)]).identify(f"Bearer {token}").name == "ops.1"
    for name in ['a"\nbudget_usd = 1e9\n#', ""]:
        bad = subprocess.run([sys.executable, "-m", "llmtriage.cli", "key", "--name", name],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "--name" in bad.stderr and "[[keys]]" not in bad.stdout
