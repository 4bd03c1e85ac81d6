"""The gateway's request bodies (OpenAI's, for text models) and its errors.

What the OpenAI API accepts for text models is accepted: content as a string, as an array of
text parts, or null (an assistant turn that only called tools); the ``developer`` role (sent
upstream as ``system``) and ``tool`` messages. What Triage cannot honour is refused with a
400 naming it, never silently ignored: ``n`` above 1, ``tools`` / ``functions``, content
parts that are not text (images, audio), ``logprobs`` / ``top_logprobs`` (the answer's
log-probabilities are not returned) and a ``response_format`` other than text (no model is
held to a schema). ``stop`` is honoured: up to 4 sequences, sent to whichever models
answer. Other unknown OpenAI fields (sampling settings such as ``top_p``, ``seed``,
``user``) are accepted and ignored, so clients need no change. Every field Triage reads is
bounded, so a request cannot ask for unbounded work, and text must be valid Unicode (a lone
surrogate is a 400, not an error deeper in).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)

from llmtriage.data.jsontext import dumps
from llmtriage.policies.limits import COST, LATENCY, Limits

MAX_TOKENS = 8192
MAX_TEXT = 200_000


def valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text holds a lone surrogate (not valid Unicode)") from None
    return text


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(valid_unicode)]


def not_text_or_bool(value: Any) -> Any:
    """JSON Schema's integer: 5 and 5.0, never "5" or true (pydantic would coerce them)."""
    if isinstance(value, str | bool):
        raise ValueError("must be a number")
    return value


#: How many choices a request asks for: one, a whole number as JSON Schema means it.
OneChoice = Annotated[int, Field(ge=1, le=1), BeforeValidator(not_text_or_bool)]
#: One stop sequence, and how many a request may give (OpenAI's limit).
StopText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(valid_unicode)]
MAX_STOPS = 4
#: A token limit a request may ask for.
TokenLimit = Annotated[int, Field(ge=1, le=MAX_TOKENS), BeforeValidator(not_text_or_bool)]


class TextPart(BaseModel):
    """One part of a message's content; only text parts exist for text models."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=40, json_schema_extra={"enum": ["text"]})
    text: Text

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") != "text":
            raise ValueError(f"content part of type {data.get('type')!r} is not supported: "
                             "the gateway serves text models (give 'text' parts)")
        return data


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[TextPart], Field(max_length=100)] | None = None

    def flat(self) -> dict[str, str]:
        """The message as the models get it: text only, ``developer`` as ``system``."""
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text or "" for part in content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


#: The longest deadline and the largest spend cap a request may name.
MAX_DEADLINE_MS = 600_000.0
MAX_COST_USD = 1000.0


class TriageOptions(BaseModel):
    """The ``triage`` extension of a request body: its limits (see policies.limits); the
    ``x-triage-max-latency-ms`` and ``x-triage-max-cost-usd`` headers say the same."""

    model_config = ConfigDict(extra="forbid")

    max_latency_ms: float | None = Field(None, gt=0, le=MAX_DEADLINE_MS, strict=True)
    max_cost_usd: float | None = Field(None, ge=0, le=MAX_COST_USD, strict=True)
    #: false: neither answered from the response cache nor kept in it.
    cache: StrictBool = True


def limit_header(limit: str) -> str:
    """The header a limit comes in: ``max_latency_ms`` in ``x-triage-max-latency-ms``."""
    return "x-triage-" + limit.replace("_", "-")


#: The headers a request's limits may come in, and each one's bound.
LIMIT_HEADERS = {limit_header(LATENCY): (LATENCY, MAX_DEADLINE_MS),
                 limit_header(COST): (COST, MAX_COST_USD)}


def limits_of(headers: Mapping[str, str], body: TriageOptions | None) -> Limits:
    """A request's limits: from its headers, else its body's ``triage`` extension. Raises
    ValueError naming the header that is not a number in its range."""
    given: dict[str, float] = {k: getattr(body, k) for k in (LATENCY, COST)
                               if body is not None and getattr(body, k) is not None}
    for header, (name, most) in LIMIT_HEADERS.items():
        text = headers.get(header)
        if text is None:
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        low_ok = value > 0 if name == LATENCY else value >= 0
        if not (math.isfinite(value) and low_ok and value <= most):
            wanted = (f"milliseconds above 0, at most {most:g}" if name == LATENCY
                      else f"US dollars from 0 to {most:g}")
            raise ValueError(f"{header} must be a number of {wanted}; got {text[:40]!r}")
        given[name] = value
    return Limits(given.get(LATENCY), given.get(COST))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    #: End the stream with a chunk holding the request's token usage.
    include_usage: StrictBool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    max_tokens: TokenLimit | None = None
    # null is the default, as in OpenAI's API (clients that send every field send it).
    temperature: float | None = Field(None, ge=0.0, le=2.0, strict=True,
                                      description="0 when omitted or null")
    stream: StrictBool | None = None
    n: OneChoice | None = Field(None, description="only 1 is supported")
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOPS)] | None = Field(
        None, description="up to 4 sequences where the answer ends")
    stream_options: StreamOptions | None = None
    triage: TriageOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _honoured(cls, data: Any) -> Any:
        """Refuse, naming it, what a client asks for that the gateway would not give."""
        if not isinstance(data, dict):
            return data
        if data.get("logit_bias"):
            raise ValueError("'logit_bias' is not supported: token ids differ from model to "
                             "model, and a policy may answer with any of them")
        if data.get("modalities") not in (None, ["text"]) or data.get("audio") is not None:
            raise ValueError("audio output is not supported: the gateway serves text models")
        if isinstance(data.get("n"), int) and data["n"] > 1:
            raise ValueError(f"n = {data['n']} is not supported: the gateway returns one "
                             "choice per request")
        if data.get("logprobs") not in (None, False, 0) or data.get("top_logprobs"):
            raise ValueError("'logprobs' is not supported: the gateway does not return the "
                             "answer's token log-probabilities")
        shape = data.get("response_format")
        kind = shape.get("type") if isinstance(shape, dict) else shape
        if kind not in (None, "text"):
            raise ValueError(f"response_format {str(kind)[:40]!r} is not supported: no model "
                             "is held to a format or schema (ask for JSON in the prompt)")
        return data

    def usage_chunk(self) -> bool:
        """Whether a stream ends with a chunk holding the token usage (a whole response
        always holds it, so the option asks nothing more of one)."""
        return self.stream_options is not None and self.stream_options.include_usage

    def stops(self) -> tuple[str, ...]:
        """The stop sequences, as the models are sent them."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatBody(_Common):
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    max_completion_tokens: TokenLimit | None = None
    tools: list[dict[str, Any]] | None = Field(
        None, max_length=0, description="not supported: the gateway serves text models")
    functions: list[dict[str, Any]] | None = Field(
        None, max_length=0, description="not supported: the gateway serves text models")

    @model_validator(mode="before")
    @classmethod
    def _no_tools(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field in ("tools", "functions"):
                if data.get(field):
                    raise ValueError(f"'{field}' is not supported: the gateway serves text "
                                     "models without tool calling")
        return data

    def conversation(self) -> list[dict[str, str]]:
        return [m.flat() for m in self.messages]


class CompletionBody(_Common):
    """The legacy text completions API: one prompt (or a list holding one)."""

    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _one_plain_answer(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("echo"):
            raise ValueError("'echo' is not supported: the answer is the completion alone")
        if data.get("suffix"):
            raise ValueError("'suffix' is not supported: the gateway completes after the "
                             "prompt, never between it and a suffix")
        if isinstance(data.get("best_of"), int) and data["best_of"] > 1:
            raise ValueError(f"best_of = {data['best_of']} is not supported: the gateway "
                             "generates one answer per model it calls")
        return data

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.text()}]


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, description="the id of a response")
    score: float = Field(ge=0.0, le=1.0, strict=True,
                         description="quality of that response, 0 to 1")


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape (the openai client raises the matching exception)."""

    error: ErrorDetail


class Reply(JSONResponse):
    """A JSON response rendered by orjson (several times faster than the json module,
    and a non-finite number becomes null, never the invalid ``NaN``)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error(status: int, message: str, kind: str = "invalid_request_error",
          code: str | None = None, retry_after: float | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    """An error in OpenAI's shape."""
    headers = dict(headers or {})
    if retry_after is not None:
        headers["retry-after"] = f"{max(1, round(retry_after))}"
    return Reply({"error": {"message": message, "type": kind, "code": code}},
                 status_code=status, headers=headers or None)
