"""OpenAI-compatible HTTP backend: OpenAI, vLLM, llama.cpp server, Ollama, most providers.

Retries with exponential backoff (and jitter) on 429 and 5xx and on connection failures,
honouring ``Retry-After``; streaming over server-sent events. Every attempt has a
whole-call deadline (``timeout_s``: an upstream trickling a byte a second still ends) and
a time-to-first-byte one (``first_byte_s``); a call that hits its deadline is not retried
(another model is tried instead, and the circuit breaker counts it). Each model has its own
concurrency limit and a bounded queue before it (``max_concurrency``, ``max_queue``): a
hanging model fills its own queue, then fails fast, and never starves the others. Replies
are untrusted: bodies are capped in size and every field is checked. API keys come from the
catalog (an environment variable or a secret) and are sent only in the Authorization
header: error messages carry the status and a short excerpt of the body, never the
request headers.

The HTTP client is aiohttp: on the gateway's pass-through path it costs about a tenth of
httpx's CPU per call (0.13-0.2 ms against 1.7-2.3 ms, measured side by side on loopback),
and the call is most of what a passed-through request costs.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import yarl
from multidict import CIMultiDict

from llmtriage.backends.catalog import Catalog, ModelSpec
from llmtriage.backends.live import (
    MALFORMED,
    BackendError,
    ChatRequest,
    Completion,
    TokenLogprob,
    parse_chat_response,
    parse_logprobs,
    parse_usage,
)
from llmtriage.data.jsontext import dumps, loads

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: Backoff: first wait, growth factor, and cap (seconds); Retry-After overrides, capped too.
BACKOFF_BASE, BACKOFF_FACTOR, BACKOFF_CAP = 0.25, 2.0, 8.0
#: The largest reply body (or whole stream) read from an upstream, whatever was asked.
MAX_REPLY_BYTES = 16 << 20
#: A reply's allowance below that: a fixed part, and so much per token the request lets the
#: model write (its text, and each token's logprob with two alternatives, take a few hundred
#: bytes a token; a stream wraps every token in a chunk of its own). Parsed, a reply takes
#: about ten times its size in memory, for every call in flight: an upstream that pads its
#: replies must not make a 256-token answer cost 170 MB.
REPLY_BASE_BYTES = 64 << 10
REPLY_BYTES_PER_TOKEN = 4 << 10


def reply_cap(max_tokens: int) -> int:
    """The most bytes read of a reply to a request for ``max_tokens`` tokens."""
    return min(MAX_REPLY_BYTES, REPLY_BASE_BYTES + REPLY_BYTES_PER_TOKEN * max_tokens)


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


#: What aiohttp raises when a connection or a reply fails.
TRANSPORT_ERRORS = (aiohttp.ClientError, ConnectionError)


def retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    # An upstream's header is untrusted: no NaN, no infinity, at most an hour.
    return min(3600.0, max(0.0, seconds)) if math.isfinite(seconds) else None


class Deadline:
    """The time left of one attempt, and the error its expiry is."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.started = time.monotonic()
        self.first_byte_s = min(spec.first_byte_s or spec.timeout_s, spec.timeout_s)

    def left(self, first_byte: bool = False) -> float:
        limit = self.first_byte_s if first_byte else self.spec.timeout_s
        return max(0.0, limit - (time.monotonic() - self.started))

    async def run(self, awaitable: Any, first_byte: bool = False) -> Any:
        try:  # a timeout scope, not wait_for: no task per call
            async with asyncio.timeout(self.left(first_byte)):
                return await awaitable
        except TimeoutError:
            what = (f"no first byte within {self.first_byte_s:g} s" if first_byte
                    else f"not done within {self.spec.timeout_s:g} s")
            raise BackendError(f"{self.spec.name}: timed out ({what})", status=504) from None


class ModelGate:
    """One model's concurrency limit and the bounded queue before it."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.slots = asyncio.Semaphore(spec.max_concurrency)
        self.waiting = 0

    async def __aenter__(self) -> None:
        if self.waiting >= self.spec.max_queue and self.slots.locked():
            raise BackendError(
                f"{self.spec.name}: at capacity ({self.spec.max_concurrency} calls running, "
                f"{self.waiting} waiting)", status=503, saturated=True)
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1

    async def __aexit__(self, *_: object) -> None:
        self.slots.release()


async def read_capped(response: aiohttp.ClientResponse, name: str, deadline: Deadline,
                      cap: int) -> bytes:
    """The whole body, within the deadline and ``cap`` bytes: read at once when its
    announced length is within the cap and it is not compressed (aiohttp holds a body to
    its announced length; a compressed one may grow past it), else part by part,
    counting."""
    async def partwise() -> bytes:
        body = bytearray()
        async for part in response.content.iter_any():
            body += part
            if len(body) > cap:
                raise BackendError(f"{name}: upstream reply over {cap} bytes")
        return bytes(body)
    length = response.content_length
    whole = (length is not None and length <= cap
             and "content-encoding" not in response.headers)
    try:
        return await deadline.run(response.read() if whole else partwise())
    except TRANSPORT_ERRORS as exc:
        raise BackendError(f"{name}: reply broke off: {type(exc).__name__}",
                           retryable=True) from None


async def lines_capped(response: aiohttp.ClientResponse, name: str, cap: int
                       ) -> AsyncIterator[str]:
    """The body's lines (a server-sent event stream), the whole stream at most ``cap``
    bytes, as a whole reply is: an upstream that streams for ever (or one line that never
    ends) fails at the cap instead of filling memory until the request's deadline."""
    pending = bytearray()
    total = 0
    async for part in response.content.iter_any():
        total += len(part)
        if total > cap:
            raise BackendError(f"{name}: upstream stream over {cap} bytes")
        searched = len(pending)  # a line ends in the new part, if anywhere
        pending += part
        cut = pending.rfind(b"\n", searched)
        if cut < 0:
            continue
        lines = pending[:cut].split(b"\n")
        del pending[:cut + 1]
        for line in lines:
            yield line.rstrip(b"\r").decode(errors="replace")
    if pending:
        yield pending.rstrip(b"\r").decode(errors="replace")


def hand_back(response: aiohttp.ClientResponse) -> None:
    """Give the connection back to the pool if the reply was read to its end; else close
    it (an abandoned reply must not be read by the next call)."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()


class OpenAIBackend:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._client: aiohttp.ClientSession | None = None
        self._gates: dict[str, ModelGate] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._targets: dict[str, tuple[yarl.URL, CIMultiDict[str]]] = {}

    def _http(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # The deadlines are ours (Deadline), so the session's own timeout is off; no
            # cookies, proxies or .netrc from the environment: an upstream is a URL.
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256), cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
                auto_decompress=True)
            self._gates, self._loop = {}, loop
        return self._client

    def _limit(self, spec: ModelSpec) -> ModelGate:
        self._http()  # gates belong to the running loop
        if spec.name not in self._gates:
            self._gates[spec.name] = ModelGate(spec)
        return self._gates[spec.name]

    def _target(self, spec: ModelSpec) -> tuple[yarl.URL, CIMultiDict[str]]:
        """Where a model's calls go and their headers, built once per model (a URL given
        as text is parsed again on every call)."""
        target = self._targets.get(spec.name)
        if target is None:
            assert spec.endpoint is not None
            headers = CIMultiDict({"Content-Type": "application/json"})
            if key := spec.secret():
                headers["Authorization"] = f"Bearer {key}"
            target = self._targets[spec.name] = (
                yarl.URL(spec.endpoint.rstrip("/") + "/chat/completions"), headers)
        return target

    async def _post(self, spec: ModelSpec, body: dict[str, Any]
                    ) -> tuple[aiohttp.ClientResponse, Deadline]:
        """POST with retries; returns an open (streaming) response with a 2xx status and
        the deadline of the attempt that got it."""
        client = self._http()
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            deadline = Deadline(spec)
            url, headers = self._target(spec)
            try:
                response = await deadline.run(client.post(
                    url, data=dumps(body), headers=headers,
                    allow_redirects=False), first_byte=True)
            except TRANSPORT_ERRORS as exc:
                error = BackendError(f"{spec.name}: connection failed: {type(exc).__name__}",
                                     retryable=True)
            except BackendError as exc:  # the deadline
                error = exc
            else:
                if response.status < 300:
                    return response, deadline
                try:
                    text = (await read_capped(response, spec.name, deadline,
                                              REPLY_BASE_BYTES)).decode(errors="replace")
                except BackendError as exc:
                    text = str(exc)
                finally:
                    hand_back(response)
                retryable = response.status in RETRY_STATUSES
                wait = retry_after(response)
                error = BackendError(
                    f"{spec.name}: upstream answered {response.status}: {_excerpt(text)}",
                    status=response.status, retryable=retryable, retry_after=wait,
                )
            if not error.retryable or attempt > spec.max_retries:
                if attempt > 1:
                    raise BackendError(f"{error} (after {attempt} attempts)",
                                       status=error.status, retryable=error.retryable,
                                       retry_after=error.retry_after)
                raise error
            backoff = min(BACKOFF_CAP, BACKOFF_BASE * BACKOFF_FACTOR ** (attempt - 1))
            delay = min(BACKOFF_CAP, wait) if wait is not None else backoff
            await asyncio.sleep(delay * (1 + 0.1 * random.random()))

    def _cost(self, spec: ModelSpec, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * spec.price_in + tokens_out * spec.price_out) / 1e6

    def _energy(self, spec: ModelSpec, tokens: int) -> float | None:
        if spec.energy_j_per_token is None:
            return None
        return spec.energy_j_per_token * tokens

    async def complete(self, name: str, request: ChatRequest) -> Completion:
        spec = self.catalog.spec(name)
        body = request.payload(model=spec.remote_name or spec.name)
        async with self._limit(spec):
            start = time.perf_counter()
            response, deadline = await self._post(spec, body)
            try:
                raw = await read_capped(response, name, deadline,
                                        reply_cap(request.max_tokens))
            finally:
                hand_back(response)
            try:
                data = loads(raw)
            except ValueError as exc:  # not JSON, not UTF-8, or nested past reading
                text = raw[:400].decode(errors="replace")
                raise BackendError(f"{name}: upstream sent a body that is not JSON "
                                   f"({_excerpt(str(exc), 80)}): {_excerpt(text)}") from None
            latency_ms = (time.perf_counter() - start) * 1000
        text, tokens_in, tokens_out, logprobs, finish = parse_chat_response(data)
        return Completion(
            model=name, text=text, tokens_in=tokens_in, tokens_out=tokens_out,
            latency_ms=latency_ms, cost_usd=self._cost(spec, tokens_in, tokens_out),
            energy_j=self._energy(spec, tokens_in + tokens_out), logprobs=logprobs,
            finish_reason=finish,
        )

    async def stream(self, name: str, request: ChatRequest) -> AsyncIterator[str | Completion]:
        """Yield text deltas as they arrive, then the assembled :class:`Completion`."""
        spec = self.catalog.spec(name)
        body = request.payload(model=spec.remote_name or spec.name, stream=True)
        body["stream_options"] = {"include_usage": True}
        async with self._limit(spec):
            start = time.perf_counter()
            response, deadline = await self._post(spec, body)
            parts: list[str] = []
            logprobs: list[TokenLogprob] = []
            usage: Any = {}
            finish = "stop"
            done = False
            lines = lines_capped(response, name, reply_cap(request.max_tokens))
            try:
                while True:
                    try:
                        line = await deadline.run(anext(lines), first_byte=not parts)
                    except StopAsyncIteration:
                        break
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = loads(payload)
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices") or ():
                            delta = (choice.get("delta") or {}).get("content") or ""
                            if not isinstance(delta, str):
                                raise TypeError(f"delta content is a {type(delta).__name__}")
                            logprobs.extend(parse_logprobs(choice) or ())
                            finish = str(choice.get("finish_reason") or finish)[:40]
                            if delta:
                                parts.append(delta)
                                yield delta
                    except (ValueError, *MALFORMED) as exc:
                        raise BackendError(f"{name}: malformed stream chunk ({exc}): "
                                           f"{_excerpt(payload)}") from None
            except TRANSPORT_ERRORS as exc:
                raise BackendError(
                    f"{name}: stream broke off after {len(parts)} chunks: {type(exc).__name__}"
                ) from None
            finally:
                await lines.aclose()
                hand_back(response)
            if not done:
                raise BackendError(f"{name}: stream ended without [DONE] after "
                                   f"{len(parts)} chunks")
            latency_ms = (time.perf_counter() - start) * 1000
        try:
            tokens_in, tokens_out = parse_usage(usage, len(logprobs) or len(parts))
        except MALFORMED as exc:
            raise BackendError(f"{name}: malformed stream usage: {exc}") from None
        yield Completion(
            model=name, text="".join(parts), tokens_in=tokens_in, tokens_out=tokens_out,
            latency_ms=latency_ms, cost_usd=self._cost(spec, tokens_in, tokens_out),
            energy_j=self._energy(spec, tokens_in + tokens_out), logprobs=logprobs or None,
            finish_reason=finish,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
