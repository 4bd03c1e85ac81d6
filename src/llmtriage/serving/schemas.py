"""The gateway's request bodies (OpenAI's, restricted to what Triage uses) and its errors.

Unknown OpenAI fields are accepted and ignored, so clients need no change; the fields
Triage reads are bounded, so a request cannot ask for unbounded work.
"""

from __future__ import annotations

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

MAX_TOKENS = 8192


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    stream: bool = False


class ChatBody(_Common):
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)


class CompletionBody(_Common):
    """The legacy text completions API: one prompt (or a list holding one)."""

    prompt: str | list[str] = Field(max_length=200_000)

    def text(self) -> str | None:
        if isinstance(self.prompt, str):
            return self.prompt
        return self.prompt[0] if len(self.prompt) == 1 else None


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, description="the id of a response")
    score: float = Field(ge=0.0, le=1.0, description="quality of that response, 0 to 1")


def error(status: int, message: str, kind: str = "invalid_request_error",
          code: str | None = None, retry_after: float | None = None) -> JSONResponse:
    """An error in OpenAI's shape (the openai client raises the matching exception)."""
    headers = {"retry-after": f"{max(1, round(retry_after))}"} if retry_after is not None \
        else None
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}},
                        status_code=status, headers=headers)
