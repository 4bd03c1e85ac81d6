"""Where the gateway keeps what replicas must agree on: in memory, or in Redis."""

from __future__ import annotations

from llmtriage.serving.config import ClientKey, GatewaySettings
from llmtriage.serving.requestlog import RequestLog
from llmtriage.serving.state.base import SharedState, Ticket
from llmtriage.serving.state.memory import MemoryState

__all__ = ["MemoryState", "SharedState", "Ticket", "open_state"]


def open_state(settings: GatewaySettings, keys: list[ClientKey], log: RequestLog | None
               ) -> SharedState:
    """The state store ``settings.state_url`` names (none: this process's memory), seeded
    with the spend (and, in memory, the rate window) the request log remembers."""
    spent = log.spent_by_client() if log is not None else None
    if settings.state_url is None:
        return MemoryState(keys, settings.session_ttl_s, spent,
                           log.recent_by_client(60.0) if log is not None else None)
    from llmtriage.serving.state.redis import RedisState

    return RedisState(settings.state_url, settings.session_ttl_s, spent,
                      log.spent_now if log is not None else None)
