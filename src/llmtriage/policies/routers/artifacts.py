"""Trained routers on disk: one ``.npz`` of plain arrays plus a JSON header, no pickle.

Loading reads arrays with ``allow_pickle=False`` and rebuilds only the router classes named
below, so a file from anywhere can at worst fail to load, never run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmtriage.data.errors import DataError
from llmtriage.data.files import write_atomic
from llmtriage.policies.routers.base import QualityRouter
from llmtriage.policies.routers.classifier import ClassifierRouter
from llmtriage.policies.routers.elo import EloRouter
from llmtriage.policies.routers.knn import KNNRouter
from llmtriage.policies.routers.mf import MFRouter
from llmtriage.signals.embedder import embedder_named

FORMAT, VERSION = "llmtriage-router", 1
CLASSES: dict[str, type[QualityRouter]] = {
    "knn": KNNRouter, "classifier": ClassifierRouter, "mf": MFRouter, "sw-ranking": EloRouter,
}


def save(router: QualityRouter, path: str | Path, **info: object) -> Path:
    """Write a fitted router; ``info`` (training data, scores) goes into the header."""
    header = {
        "format": FORMAT, "version": VERSION, "class": router.name,
        "params": router.params(), "state": router.state_meta(),
        "embedder": router._embedder().name, "info": info,
    }
    arrays = router.state_arrays()

    def dump(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, __header__=np.array(json.dumps(header)), **arrays)

    return write_atomic(path, dump)


def load(path: str | Path) -> QualityRouter:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["__header__"]))
            arrays = {k: data[k] for k in data.files if k != "__header__"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a Triage router artifact ({exc})") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise DataError(f"{path}: unsupported artifact {header.get('format')} "
                        f"v{header.get('version')} (this Triage reads {FORMAT} v{VERSION})")
    cls = CLASSES.get(header.get("class"))
    if cls is None:
        raise DataError(f"{path}: unknown router class {header.get('class')!r}")
    router = cls(**header["params"])
    for key, value in header["state"].items():
        setattr(router, key, tuple(value) if key == "models_" else value)
    for key, value in arrays.items():
        setattr(router, key, value.item() if value.ndim == 0 else value)
    try:
        router.embedder_ = embedder_named(str(header["embedder"]))
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    router.predictions_ = {}
    router.frozen_ = True  # fitted already: evaluation must not refit it
    return router
