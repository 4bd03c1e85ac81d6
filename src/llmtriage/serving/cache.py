"""The response cache: the cheapest tier, in front of every policy.

A request whose answer was given before is answered from memory at no cost. A hit must be
the same question in the same place:

- **exact**: the same client key, policy (or model), token limit and whole conversation;
- **semantic** (``semantic = true``): the same key, policy, token limit and conversation up
  to the last user turn, and a last turn whose MiniLM embedding is within ``threshold``
  (cosine) of a cached one. So a multi-turn conversation never gets another
  conversation's answer, and a paraphrase gets the answer of the question it paraphrases;
  a question that differs in one number may too, which is why it is off by default and its
  false-hit rate is measured (bench/response_cache.py).

Entries live ``ttl_s`` seconds, at most ``max_entries`` of them (the least recently used go
first), each answer bounded by the request's token limit. Sampled answers (temperature
above 0) and degraded ones (a stand-in, a fallback) are never stored. A hit is one step of
the response's trace, model ``cache``, with zero cost and its own latency.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmtriage.signals.embedder import Embedder

#: Vectors one scope (a key's and policy's conversations at one position) is matched
#: against: a miss costs one product with at most this many, whatever the cache holds.
MAX_SCOPE = 1024


class CacheSettings(BaseModel):
    """``[gateway.cache]``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = False
    ttl_s: float = Field(600.0, gt=0)
    max_entries: int = Field(10_000, gt=0, le=1_000_000)
    semantic: bool = False
    #: Cosine similarity of the last user turns at or above which a cached answer is reused.
    threshold: float = Field(0.98, gt=0, le=1)


@dataclass(frozen=True)
class Entry:
    answer: str
    answered_by: str
    usage: dict[str, int]
    #: What producing the answer cost and took: what each hit saves.
    cost_usd: float
    latency_ms: float
    stored: float
    #: The scope's key and the semantic vector (None: exact only).
    scope: str
    vector: np.ndarray | None
    #: The id of the response that produced the answer.
    source: str = ""
    #: Why the answer ended ("length": at the token limit, which is part of the key).
    finish: str = "stop"


@dataclass(frozen=True)
class Hit:
    entry: Entry
    match: str  # "exact" or "semantic"
    similarity: float


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def _last_user(messages: list[dict[str, str]]) -> int | None:
    return next((i for i in range(len(messages) - 1, -1, -1)
                 if messages[i]["role"] == "user"), None)


class ResponseCache:
    def __init__(self, settings: CacheSettings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder if settings.semantic else None
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        #: Per scope, the exact keys whose last turns can be matched semantically.
        self._scopes: dict[str, dict[str, np.ndarray]] = {}

    def keys(self, client: str | None, policy: str, max_tokens: int,
             messages: list[dict[str, str]], stop: tuple[str, ...] = (), task: str = ""
             ) -> tuple[str, str, str | None]:
        """(exact key, scope, the text matched semantically: the last user turn, when the
        conversation ends with one). What shapes the answer besides the text (its length
        limit, its stop sequences, the task it names, which a policy may calibrate by) is
        part of both."""
        last = _last_user(messages)
        if last is None or last != len(messages) - 1:
            return _digest(client, policy, max_tokens, list(stop), task, messages), "", None
        scope = _digest(client, policy, max_tokens, list(stop), task, messages[:last])
        return _digest(scope, messages[last]["content"]), scope, messages[last]["content"]

    async def _vector(self, text: str) -> np.ndarray:
        assert self.embedder is not None
        return (await asyncio.to_thread(self.embedder.embed, [text]))[0]

    def _live(self, key: str, now: float) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry.stored > self.settings.ttl_s:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    async def get(self, key: str, scope: str, text: str | None
                  ) -> tuple[Hit | None, np.ndarray | None]:
        """The hit for a request (None: a miss), and the vector computed for it (to store
        with its answer)."""
        now = time.monotonic()
        entry = self._live(key, now)
        if entry is not None:
            return Hit(entry, "exact", 1.0), entry.vector
        if self.embedder is None or text is None:
            return None, None
        vector = await self._vector(text)
        candidates = self._scopes.get(scope)
        if not candidates:
            return None, vector
        names = list(candidates)
        similarity = np.stack([candidates[n] for n in names]) @ vector
        best = int(np.argmax(similarity))
        if similarity[best] < self.settings.threshold:
            return None, vector
        entry = self._live(names[best], now)
        return (Hit(entry, "semantic", float(similarity[best])) if entry else None), vector

    def put(self, key: str, scope: str, entry: Entry) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        if entry.vector is not None and scope:
            vectors = self._scopes.setdefault(scope, {})
            vectors[key] = entry.vector
            if len(vectors) > MAX_SCOPE:  # the oldest leave the semantic index only
                del vectors[next(iter(vectors))]
        while len(self._entries) > self.settings.max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        vectors = self._scopes.get(entry.scope)
        if vectors is not None:
            vectors.pop(key, None)
            if not vectors:
                del self._scopes[entry.scope]

    def __len__(self) -> int:
        return len(self._entries)
