"""Shared fixtures: the real data sets in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRIAGE_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "README.md").is_file():
        pytest.fail(f"shared data not found at {DATA}; set TRIAGE_DATA to its folder")
    return DATA


@pytest.fixture(scope="module")
def up():
    """The fault-injecting OpenAI-compatible upstream (tests/servers/upstream.py): its URL."""
    from servers.processes import upstream

    with upstream() as url:
        yield url
