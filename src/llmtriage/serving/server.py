"""The HTTP server under the gateway: uvicorn, with limits a bare uvicorn lacks.

- **A connection cap** (``max_connections``): a connection beyond it is closed as soon as it
  is accepted, so idle sockets cannot use up the process's file descriptors (whose soft
  limit is raised to the hard one at start).
- **A header deadline** (``header_timeout_s``): a connection must send a request's headers
  within this long of opening (or of its previous response), so half-open and slow-header
  (slowloris) connections are closed instead of held forever.
- **Rate-limited error logging**: the same error line (say, the event loop's "Too many open
  files" on accept) is printed at most a few times a minute, not once per event.

For exposure to the internet, put a reverse proxy (nginx, Envoy, a cloud load balancer) in
front for TLS, per-address connection limits and request-rate limits; the gateway's own
limits keep it alive, they do not make it a public edge server.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llmtriage.serving.config import GatewaySettings


def guarded_protocol(max_connections: int, header_timeout_s: float
                     ) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (a C parser, cheaper per request than the pure-Python
    h11) with a connection cap and a header deadline."""

    class Guarded(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                transport.abort()
                return
            super().connection_made(transport)
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            armed_for = self.cycle

            def expire() -> None:
                # Still no new request since the deadline was armed: drop the connection.
                if self.cycle is armed_for and not self.transport.is_closing():
                    self.transport.close()

            self._header_deadline = self.loop.call_later(header_timeout_s, expire)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._header_deadline.cancel()
                self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            deadline = getattr(self, "_header_deadline", None)
            if deadline is not None:
                deadline.cancel()
            if self in self.connections or exc is not None or self.cycle is not None:
                super().connection_lost(exc)

    return Guarded


class RepeatFilter(logging.Filter):
    """Lets each distinct message through at most ``burst`` times per ``period_s``."""

    def __init__(self, burst: int = 3, period_s: float = 60.0) -> None:
        super().__init__()
        self.burst, self.period_s = burst, period_s
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"[:200]
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start > self.period_s:
            start, count = now, 0
        self._seen[key] = (start, count + 1)
        if len(self._seen) > 1000:  # the filter's own memory is bounded too
            self._seen = {key: self._seen[key]}
        return count < self.burst


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard one; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def run(app: object, host: str, port: int, settings: GatewaySettings) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, finishing in-flight requests first."""
    files = raise_file_limit()
    repeats = RepeatFilter()
    for name in ("asyncio", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).addFilter(repeats)
    # Leave descriptors for upstream connections, the log and the models.
    cap = max(1, min(settings.max_connections, files - 256))
    # No access log (the request log is the record) and no X-Forwarded-For rewriting
    # (nothing reads the client's address): neither costs a request anything.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=False, http=guarded_protocol(cap, settings.header_timeout_s),
                timeout_keep_alive=int(max(1, settings.keep_alive_s)),
                timeout_graceful_shutdown=int(settings.shutdown_timeout_s))
