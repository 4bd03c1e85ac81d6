"""The live call contract: one chat request in, one completion out.

Every live backend (embedded llama.cpp, OpenAI-compatible HTTP) takes a :class:`ChatRequest`
and returns a :class:`Completion`: the answer text, token counts, per-token logprobs where the
model gives them, the latency, the cost and an energy estimate. Both speak OpenAI's
chat-completion dicts, so one parser serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol


class BackendError(RuntimeError):
    """A live call failed for good (after retries); the message is safe to show."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, saturated: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        #: Seconds after which trying again may work (an open circuit, an upstream's 429).
        self.retry_after = retry_after
        #: Refused by the gateway's own per-model limit before any call: says nothing about
        #: the upstream's health, so the circuit breaker ignores it.
        self.saturated = saturated

    @property
    def upstream_fault(self) -> bool:
        """Whether the upstream is to blame (not a request it rightly refused with a 4xx)."""
        if self.saturated:
            return False
        return self.status is None or self.status >= 500 or self.status in (408, 429)


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[dict[str, str], ...]
    max_tokens: int = 64
    temperature: float = 0.0
    logprobs: bool = True
    top_logprobs: int = 2
    stop: tuple[str, ...] = ()
    seed: int | None = 0

    @classmethod
    def ask(cls, prompt: str, system: str | None = None, **kwargs: Any) -> ChatRequest:
        messages = ({"role": "system", "content": system},) if system else ()
        return cls((*messages, {"role": "user", "content": prompt}), **kwargs)

    def payload(self, model: str | None = None, stream: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": list(self.messages),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if model is not None:
            body["model"] = model
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        if self.stop:
            body["stop"] = list(self.stop)
        if self.seed is not None:
            body["seed"] = self.seed
        if stream:
            body["stream"] = True
        return body


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    #: The most likely alternatives at this position, best first (the token itself included).
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Completion:
    model: str
    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    cost_usd: float
    energy_j: float | None = None
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str = "stop"
    #: Backend-specific measurements (llama.cpp timings, HTTP attempts), for reports.
    extra: dict[str, Any] = field(default_factory=dict)


class LiveBackend(Protocol):
    async def complete(self, model: str, request: ChatRequest) -> Completion: ...

    async def aclose(self) -> None: ...


#: The most tokens an upstream may claim for one call: more is a broken (or hostile)
#: upstream, not a bill to pay.
MAX_REPORTED_TOKENS = 10_000_000
#: What an upstream's reply may hold, so nonsense fails the call instead of the request path.
MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError)


def token_count(value: Any, what: str) -> int:
    """An upstream's token count, checked: a whole number from 0 to MAX_REPORTED_TOKENS."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value != int(value) \
            or not 0 <= value <= MAX_REPORTED_TOKENS:
        raise ValueError(f"{what} is {value!r}, not a token count")
    return int(value)


def _logprob(value: Any) -> float:
    """A finite log-probability; rounding noise above zero is clamped to zero."""
    x = float(value)
    if not math.isfinite(x) or x > 1e-3:
        raise ValueError(f"logprob {value!r} is not a log-probability")
    return min(x, 0.0)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"content is a {type(value).__name__}, not text")
    return value


def parse_logprobs(choice: dict[str, Any]) -> list[TokenLogprob] | None:
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    out = []
    for item in content:
        alternatives = item.get("top_logprobs") or ()
        top = tuple((_text(t.get("token")), _logprob(t["logprob"])) for t in alternatives)
        out.append(TokenLogprob(_text(item.get("token")), _logprob(item["logprob"]), top))
    return out


def parse_usage(usage: Any, tokens_out_default: int) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of an upstream's ``usage``, checked."""
    usage = usage or {}
    if not isinstance(usage, dict):
        raise TypeError(f"usage is a {type(usage).__name__}, not an object")
    return (token_count(usage.get("prompt_tokens", 0), "usage.prompt_tokens"),
            token_count(usage.get("completion_tokens", tokens_out_default),
                        "usage.completion_tokens"))


def parse_chat_response(data: Any) -> tuple[str, int, int, list[TokenLogprob] | None, str]:
    """(text, prompt tokens, completion tokens, logprobs, finish reason) of a chat response.

    An upstream's reply is untrusted input: anything but a chat completion with plausible
    token counts raises BackendError naming what is wrong, so the call fails (and falls
    back) instead of charging nonsense.
    """
    try:
        choice = data["choices"][0]
        text = _text(choice["message"].get("content"))
        logprobs = parse_logprobs(choice)
        tokens_in, tokens_out = parse_usage(data.get("usage"), len(logprobs or ()))
        return (text, tokens_in, tokens_out, logprobs,
                str(choice.get("finish_reason") or "stop")[:40])
    except MALFORMED as exc:
        raise BackendError(f"malformed chat completion: {type(exc).__name__}: {exc}") from None
