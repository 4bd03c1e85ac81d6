"""Writing files so that a partial write never replaces a good file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """Where Triage keeps what it builds once: assembled models, embeddings."""
    root = os.environ.get("TRIAGE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "llmtriage"


def write_atomic(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
