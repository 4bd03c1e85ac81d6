"""The HTTP server under the gateway: uvicorn, with limits a bare uvicorn lacks.

- **A connection cap** (``max_connections``): a connection beyond it is closed as soon as it
  is accepted, so idle sockets cannot use up the process's file descriptors (whose soft
  limit is raised to the hard one at start).
- **A header deadline** (``header_timeout_s``): a connection must send a request's headers
  within this long of opening (or of its previous response), so half-open and slow-header
  (slowloris) connections are closed instead of held forever.
- **A body deadline** (``body_timeout_s``): a request's body must arrive within this long
  of its headers (else a 408 and the connection closes), so bodies trickled a byte at a
  time cannot hold every connection (512 such connections shut everyone else out). While
  the gateway itself is not reading (a pipelined request's body waits for the answer
  before it), the deadline starts over.
- **Bounded headers** (``max_header_bytes``, ``max_headers``): the request line and headers
  past either bound get a 431 and the connection is closed. The HTTP parser keeps every
  header of a request until the last one arrives, and neither it nor uvicorn bounds them:
  four connections sending 64 MiB of short headers each made the gateway hold 2.6 GB.
- **Bounded pipelining**: a connection may queue at most ``MAX_PIPELINED`` requests behind
  the one running (HTTP/1.1 pipelining; no common client pipelines at all), and it is not
  read from while any wait. uvicorn resumes reading after every response however many are
  queued, so 100 connections pipelining tiny requests without reading the answers grew the
  gateway past 1 GB within seconds and starved every other client.
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
import socket
from http import HTTPStatus

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llmtriage.serving.config import GatewaySettings
from llmtriage.serving.guard import Allowance
from llmtriage.serving.schemas import error

#: Requests a connection may queue behind the one running; one more closes it.
MAX_PIPELINED = 32


def closing_error(status: int, message: str, code: str) -> bytes:
    """A whole error response (OpenAI's shape, as :func:`schemas.error` renders it) that
    the protocol writes itself before closing the connection: for requests the app never
    sees."""
    body = error(status, message, code=code).body
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s"
            % (status, HTTPStatus(status).phrase.encode(), len(body), body))


def guarded_protocol(settings: GatewaySettings, max_connections: int
                     ) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (a C parser, cheaper per request than the pure-Python
    h11) with a connection cap, deadlines for headers and body, and bounded headers."""
    header_timeout_s, body_timeout_s = settings.header_timeout_s, settings.body_timeout_s
    max_header_bytes, max_headers = settings.max_header_bytes, settings.max_headers
    refusal = closing_error(431, f"request headers too large: at most {max_headers} headers "
                                 f"and {max_header_bytes} bytes with the request line",
                            "headers_too_large")
    too_slow = closing_error(408, f"request body not received within {body_timeout_s:g} s "
                                  "of its headers", "body_timeout")

    class Guarded(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                transport.abort()
                return
            super().connection_made(transport)
            # Bytes received since the current request's headers began (an upper bound:
            # a chunk that ends one request and starts the next counts whole).
            self._header_bytes = 0
            self._reading_headers = True
            self._in_body = False
            self._headers_too_large = False
            self._body_deadline: asyncio.TimerHandle | None = None
            self._arm_header_deadline()

        def data_received(self, data: bytes) -> None:
            if not self._reading_headers:  # a body: the ingress bounds it
                super().data_received(data)
                return
            self._header_bytes += len(data)
            super().data_received(data)
            # Headers still incomplete after a chunk: what the parser holds is at most the
            # bounds plus one chunk, and only until this check closes the connection.
            if (self._reading_headers and not self.transport.is_closing()
                    and (self._header_bytes > max_header_bytes
                         or len(self.headers or ()) > max_headers)):
                self._refuse_headers()
            # A body still to come after the chunk that ended its headers: it has until the
            # deadline (armed only then, so a request that comes whole pays nothing).
            if self._in_body and self._body_deadline is None:
                self._body_deadline = self.loop.call_later(body_timeout_s, self._body_late)

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            over = len(self.headers) > max_headers or (
                self._header_bytes > max_header_bytes  # exact size only when it may be over
                and len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
                > max_header_bytes)
            self._header_bytes = 0
            if len(self.pipeline) >= MAX_PIPELINED:
                self.transport.abort()  # answers in flight cannot be cut short in order
                raise ValueError("too many pipelined requests")
            if over:
                # Raised inside the parser, it stops parsing; uvicorn then answers "bad
                # request", which send_400_response turns into this 431.
                self._headers_too_large = True
                raise ValueError("request headers too large")
            self._in_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._reading_headers, self._in_body = True, False
            if self._body_deadline is not None:
                self._body_deadline.cancel()
                self._body_deadline = None

        def _body_late(self) -> None:
            """A body trickled in (or never sent) holds a connection and the handler
            reading it: past the deadline both are let go."""
            self._body_deadline = None
            if self.flow.read_paused:  # not the client's doing: the gateway is not reading
                self._body_deadline = self.loop.call_later(body_timeout_s, self._body_late)
                return
            if self._in_body and not self.transport.is_closing():
                if not self.pipeline and not self.cycle.response_started:
                    self.transport.write(too_slow)
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            if self._headers_too_large:
                self._refuse_headers()
            else:
                super().send_400_response(msg)

        def _refuse_headers(self) -> None:
            self.transport.write(refusal)
            self.transport.close()

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
                if self.pipeline:  # read on only once the queue has drained
                    self.flow.pause_reading()
                self._header_deadline.cancel()
                self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            for deadline in (getattr(self, "_header_deadline", None),
                             getattr(self, "_body_deadline", None)):
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
        self._seen: dict[str, Allowance] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"[:200]
        allowance = self._seen.get(key)
        if allowance is None:
            if len(self._seen) >= 1000:  # the filter's own memory is bounded too
                self._seen.clear()
            allowance = self._seen[key] = Allowance(self.burst, self.period_s)
        return allowance.take()


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


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything says it serves: an address in use, or a
    host that does not resolve, is an error naming it instead of a line from uvicorn after
    the start was announced."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def run(app: object, sock: socket.socket, settings: GatewaySettings) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM/SIGINT, finishing in-flight requests first."""
    files = raise_file_limit()
    repeats = RepeatFilter()
    for name in ("asyncio", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).addFilter(repeats)
    # Leave descriptors for upstream connections, the log and the models.
    cap = max(1, min(settings.max_connections, files - 256))
    # No access log (the request log is the record) and no X-Forwarded-For rewriting
    # (nothing reads the client's address): neither costs a request anything.
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="warning", access_log=False, proxy_headers=False,
        http=guarded_protocol(settings, cap), timeout_keep_alive=int(max(1, settings.keep_alive_s)),
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s)))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    if not server.started:  # the app's own start failed (uvicorn has said why)
        raise SystemExit(3)
