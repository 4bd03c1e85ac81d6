"""Fitted policies on disk: one ``.npz`` of plain arrays plus a JSON header, never pickle.

Any registered policy saves: its parameters (what ``__init__`` takes) and its learned state
(attributes ending in ``_``) are written as JSON values and numpy arrays, recursively, so a
cascade routing policy carries its router, its calibrators and its belief moves, and a
bandit its learned statistics. Loading reads arrays with ``allow_pickle=False`` and rebuilds
only what this module names: registered policy kinds, calibrators, embedders by name. A file
from anywhere can at worst fail to load, never run code. What was measured is what serves.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from llmtriage.data.errors import DataError
from llmtriage.data.files import write_atomic
from llmtriage.data.jsontext import loads
from llmtriage.policies import registry
from llmtriage.policies.base import Policy
from llmtriage.policies.params import checked
from llmtriage.signals.calibration import Calibrator, TaskCalibrator
from llmtriage.signals.scorer import FittedScorer

FORMAT, VERSION = "llmtriage-policy", 2
#: What an artifact may unpack to, in all, and how many arrays it may hold: the zip
#: directory's sizes are checked before anything is read, so a small file that inflates
#: to gigabytes (a zip bomb) is refused instead of filling memory.
MAX_UNPACKED_BYTES = 2 << 30
MAX_ARRAYS = 10_000
#: Learned attributes that are caches of a batch, not state.
TRANSIENT = frozenset({"predictions_", "draws_", "frozen_"})


class ArtifactError(DataError):
    """A file that is not a policy this Triage can load, or a policy it cannot save."""


def save(policy: Policy, path: str | Path, **info: Any) -> Path:
    """Write a fitted policy; ``info`` (where it was fitted, scores) goes into the header."""
    arrays: dict[str, np.ndarray] = {}
    header = {"format": FORMAT, "version": VERSION, "policy": _encode_policy(policy, "p",
                                                                             arrays),
              "info": _encode(info, "info", arrays)}

    def dump(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, __header__=np.array(json.dumps(header)), **arrays)

    return write_atomic(path, dump)


def load(path: str | Path) -> Policy:
    """The policy saved at ``path``, ready to run (it is not refitted by evaluation)."""
    header, arrays = _read(Path(path))
    try:
        policy = _decode_policy(header["policy"], arrays)
        _runs(policy)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ArtifactError(f"{path}: damaged artifact ({type(exc).__name__}: {exc})") from None
    return policy


def _runs(policy: Policy) -> None:
    """Replay ``policy`` on two made-up prompts over its own models: learned state that
    does not fit together (arrays of the wrong shape or kind, a number saved as text) fails
    here, when the file is loaded, not at the first request it decides."""
    from llmtriage.backends.replay import ReplayBackend
    from llmtriage.data.table import OutcomeTable
    from llmtriage.policies.defaults import models_used
    from llmtriage.policies.loop import run_policy

    models = sorted(models_used(policy))
    if not models:
        return
    shape = (2, len(models))
    table = OutcomeTable.build(
        models, ["a", "b"], np.array([[1.0] * len(models), [0.0] * len(models)]),
        prompts=["What is 2 + 2?", "Name a colour."], responses=np.full(shape, "4", object),
        cost_usd=np.full(shape, 1e-6), latency_ms=np.full(shape, 100.0),
        energy_j=np.full(shape, 1.0), confidence=np.full(shape, -0.5),
        tokens_in=np.full(shape, 10.0), tokens_out=np.full(shape, 2.0))
    backend = ReplayBackend(table, with_answers=policy.reads_answers)
    run_policy(policy, backend, backend.queries())


def info(path: str | Path) -> dict[str, Any]:
    """What ``save`` recorded beside the policy: where it was fitted, and the search's
    objective and cross-validated estimate when a search chose it."""
    header, arrays = _read(Path(path))
    try:
        decoded = _decode(header.get("info", {}), arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{path}: damaged artifact ({type(exc).__name__}: {exc})") from None
    return decoded if isinstance(decoded, dict) else {}


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with zipfile.ZipFile(path) as packed:
            members = packed.infolist()
        unpacked = sum(m.file_size for m in members)
        if len(members) > MAX_ARRAYS or unpacked > MAX_UNPACKED_BYTES:
            raise ArtifactError(f"{path}: refused: {len(members)} arrays unpacking to "
                                f"{unpacked / 2**20:,.0f} MiB (at most {MAX_ARRAYS} and "
                                f"{MAX_UNPACKED_BYTES >> 20:,} MiB)")
        with np.load(path, allow_pickle=False) as data:
            header = loads(str(data["__header__"]))
            arrays = {k: data[k] for k in data.files if k != "__header__"}
    except ArtifactError:
        raise
    except (OSError, ValueError, KeyError, EOFError, MemoryError,
            zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: not a Triage policy artifact ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT \
            or header.get("version") != VERSION:
        found = header.get("format") if isinstance(header, dict) else None
        version = header.get("version") if isinstance(header, dict) else None
        raise ArtifactError(f"{path}: unsupported artifact {found} v{version} (this Triage "
                            f"reads {FORMAT} v{VERSION}; refit with `triage fit`)")
    return header, arrays


# -- encoding ---------------------------------------------------------------------------


def _encode_policy(policy: Policy, path: str, arrays: dict[str, np.ndarray]) -> dict:
    if policy.reads_gold:
        raise ArtifactError(f"{policy.label} reads the gold outcomes of the prompts it is "
                            "asked about: an upper bound to compare against, not a policy to "
                            "save and serve")
    kind = registry.kind_of(policy)
    params = {k: _encode(v, f"{path}.{k}", arrays) for k, v in policy.params().items()}
    state = {k: _encode(v, f"{path}.{k}", arrays) for k, v in vars(policy).items()
             if k.endswith("_") and k not in TRANSIENT}
    return {"kind": kind, "params": params, "state": state}


def _encode(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    from llmtriage.signals.embedder import Embedder

    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value if np.isfinite(value) else {"$float": repr(float(value))}
    if isinstance(value, np.generic):
        return _encode(value.item(), path, arrays)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            value = value.astype(str)
        arrays[path] = value
        return {"$array": path}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, f"{path}.{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {"$pairs": [[_encode(k, f"{path}.k{i}", arrays),
                            _encode(v, f"{path}.{i}", arrays)]
                           for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, Calibrator):
        return {"$calibrator": {"method": value.method, "base_rate": value.base_rate,
                                "x": _encode(value.x, f"{path}.x", arrays),
                                "y": _encode(value.y, f"{path}.y", arrays)}}
    if isinstance(value, TaskCalibrator):
        return {"$task-calibrator": {k: _encode(getattr(value, k), f"{path}.{k}", arrays)
                                     for k in ("pooled", "by_task", "weights")}}
    if isinstance(value, Policy):
        return {"$policy": _encode_policy(value, path, arrays)}
    if isinstance(value, FittedScorer):
        return {"$scorer": {"models": list(value.models), "embedder": value.embedder.name,
                            "weights": _encode(value.weights, f"{path}.weights", arrays),
                            "bias": _encode(value.bias, f"{path}.bias", arrays)}}
    if isinstance(value, Embedder):
        return {"$embedder": value.name}
    raise ArtifactError(f"cannot save {path} of type {type(value).__name__}")


def _decode_policy(node: dict, arrays: dict[str, np.ndarray]) -> Policy:
    kind = registry.get(str(node["kind"]))
    params = {k: _decode(v, arrays) for k, v in node["params"].items()}
    try:
        params = checked(kind.cls, params)
    except ValueError as exc:
        raise ArtifactError(f"policy {kind.name}: {exc}") from None
    policy = kind.cls(**params)
    for key, value in node["state"].items():
        if not key.endswith("_") or key in TRANSIENT:
            raise ArtifactError(f"{key!r} is not learned state")
        setattr(policy, key, _decode(value, arrays))
    for cache in TRANSIENT - {"frozen_"}:  # empty per-batch caches, as fit leaves them
        setattr(policy, cache, {})
    policy.frozen_ = True  # fitted already: evaluation must not refit it
    return policy


def _decode(node: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(node, list):
        return [_decode(v, arrays) for v in node]
    if not isinstance(node, dict):
        return node
    (tag, body), = node.items()
    if tag == "$float":
        return float(body)
    if tag == "$array":
        return arrays[body]
    if tag == "$tuple":
        return tuple(_decode(v, arrays) for v in body)
    if tag == "$pairs":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in body}
    if tag == "$calibrator":
        return Calibrator(str(body["method"]), _decode(body["x"], arrays),
                          _decode(body["y"], arrays), float(body["base_rate"]))
    if tag == "$task-calibrator":
        parts = {k: _decode(body[k], arrays) for k in ("pooled", "by_task", "weights")}
        tasks, weights = parts["by_task"], parts["weights"]
        if not (isinstance(parts["pooled"], Calibrator) and isinstance(tasks, dict)
                and isinstance(weights, dict) and set(weights) == set(tasks)
                and all(isinstance(c, Calibrator) for c in tasks.values())
                and all(isinstance(w, float) and 0.0 <= w <= 1.0 for w in weights.values())):
            raise ArtifactError("a task calibrator holds a pooled calibrator, one per task "
                                "and a weight in [0, 1] per task")
        return TaskCalibrator(**parts)
    if tag == "$policy":
        return _decode_policy(body, arrays)
    if tag == "$scorer":
        from llmtriage.signals.embedder import embedder_named

        return FittedScorer(tuple(str(m) for m in body["models"]),
                            _decode(body["weights"], arrays), _decode(body["bias"], arrays),
                            embedder_named(str(body["embedder"])))
    if tag == "$embedder":
        from llmtriage.signals.embedder import embedder_named

        return embedder_named(str(body))
    raise ArtifactError(f"unknown value tag {tag!r}")
