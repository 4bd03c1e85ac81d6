"""Sticky sessions: the next turn of a conversation goes to the model that answered the last.

A policy may pick a different model on every turn, so a chat's answers would change voice
(and quality) from turn to turn. A session is named either by the client (an
``x-triage-session`` header, at most :data:`MAX_SESSION_ID` characters) or by the
conversation itself: after answering, the gateway remembers a hash of the messages plus its
answer; a later request whose earlier messages hash to that value is the next turn of the
same chat. No client change is needed for the second form.

Sessions belong to the key that made them (another key naming the same session id starts
its own). Where they are kept is the shared state's business (see :mod:`.state`): only
fixed-size hashes, so memory is bounded by the entry count; entries expire ``ttl_s`` after
their last use (in one process, expired entries are dropped as new ones arrive, not only
when looked up again).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict

MAX_SESSION_ID = 128


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).digest()


def conversation_key(client: str | None, policy: str, messages: list[dict[str, str]]
                     ) -> bytes:
    return _digest("conversation", client, policy,
                   [[m["role"], m["content"]] for m in messages])


def lookup_key(client: str | None, policy: str, header: str | None,
               messages: list[dict[str, str]]) -> bytes | None:
    """The digest naming the session this request continues, if any."""
    if header:
        return _digest("header", client, policy, header)
    if len(messages) < 2:
        return None
    return conversation_key(client, policy, messages[:-1])


def answered_key(client: str | None, policy: str, header: str | None,
                 messages: list[dict[str, str]], answer: str) -> bytes:
    """The digest the next turn of this request's session will look up."""
    if header:
        return _digest("header", client, policy, header)
    return conversation_key(client, policy, [*messages, {"role": "assistant",
                                                          "content": answer}])


class SessionTable:
    """Session digest -> model in one process: bounded, least recently used out first."""

    def __init__(self, ttl_s: float = 3600.0, max_size: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        #: digest -> (model, last use); oldest use first.
        self._models: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._models)

    def _expire(self, now: float) -> None:
        while self._models:
            _, (_, at) = next(iter(self._models.items()))
            if now - at <= self.ttl_s:
                break
            self._models.popitem(last=False)

    def get(self, key: bytes) -> str | None:
        now = time.monotonic()
        self._expire(now)
        entry = self._models.get(key)
        if entry is None:
            return None
        self._models[key] = (entry[0], now)
        self._models.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, model: str) -> None:
        now = time.monotonic()
        self._expire(now)
        self._models[key] = (model, now)
        self._models.move_to_end(key)
        while len(self._models) > self.max_size:
            self._models.popitem(last=False)
