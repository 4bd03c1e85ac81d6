"""Sticky sessions: the next turn of a conversation goes to the model that answered the last.

A policy may pick a different model on every turn, so a chat's answers would change voice
(and quality) from turn to turn. A session is named either by the client (an
``x-triage-session`` header) or by the conversation itself: after answering, the gateway
remembers a hash of the messages plus its answer; a later request whose earlier messages
hash to that value is the next turn of the same chat. No client change is needed for the
second form. Entries expire after ``ttl_s`` and the table is bounded (least recently used
first out).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict


def conversation_key(policy: str, messages: list[dict[str, str]]) -> str:
    text = json.dumps([policy, [[m["role"], m["content"]] for m in messages]],
                      ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Sessions:
    def __init__(self, ttl_s: float = 3600.0, max_size: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._models: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, key: str) -> str | None:
        entry = self._models.get(key)
        if entry is None:
            return None
        model, at = entry
        if time.monotonic() - at > self.ttl_s:
            del self._models[key]
            return None
        self._models.move_to_end(key)
        return model

    def put(self, key: str, model: str) -> None:
        self._models[key] = (model, time.monotonic())
        self._models.move_to_end(key)
        while len(self._models) > self.max_size:
            self._models.popitem(last=False)

    def lookup(self, policy: str, header: str | None, messages: list[dict[str, str]]
               ) -> str | None:
        """The model this request's session is stuck to, if any."""
        if header:
            return self.get(f"{policy}|{header}")
        return self.get(conversation_key(policy, messages[:-1])) if len(messages) > 1 else None

    def remember(self, policy: str, header: str | None, messages: list[dict[str, str]],
                 answer: str, model: str) -> None:
        if header:
            self.put(f"{policy}|{header}", model)
        else:
            turn = [*messages, {"role": "assistant", "content": answer}]
            self.put(conversation_key(policy, turn), model)
