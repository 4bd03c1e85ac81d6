"""The live call contract: one chat request in, one completion out.

Every live backend (embedded llama.cpp, OpenAI-compatible HTTP) takes a :class:`ChatRequest`
and returns a :class:`Completion`: the answer text, token counts, per-token logprobs where the
model gives them, the latency, the cost and an energy estimate. Both speak OpenAI's
chat-completion dicts, so one parser serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class BackendError(RuntimeError):
    """A live call failed for good (after retries); the message is safe to show."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        #: Seconds after which trying again may work (an open circuit, an upstream's 429).
        self.retry_after = retry_after

    @property
    def upstream_fault(self) -> bool:
        """Whether the upstream is to blame (not a request it rightly refused with a 4xx)."""
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


def parse_logprobs(choice: dict[str, Any]) -> list[TokenLogprob] | None:
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    out = []
    for item in content:
        alternatives = item.get("top_logprobs") or ()
        top = tuple((t.get("token", ""), float(t["logprob"])) for t in alternatives)
        out.append(TokenLogprob(item.get("token", ""), float(item["logprob"]), top))
    return out


def parse_chat_response(data: Any) -> tuple[str, int, int, list[TokenLogprob] | None, str]:
    """(text, prompt tokens, completion tokens, logprobs, finish reason) of a chat response.

    Raises BackendError naming what is wrong when the body is not a chat completion.
    """
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        usage = data.get("usage") or {}
        logprobs = parse_logprobs(choice)
        tokens_out = int(usage.get("completion_tokens", len(logprobs or ())))
        return (text, int(usage.get("prompt_tokens", 0)), tokens_out, logprobs,
                str(choice.get("finish_reason") or "stop"))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise BackendError(f"malformed chat completion: {type(exc).__name__}: {exc}") from None
