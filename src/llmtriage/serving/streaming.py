"""The two OpenAI response shapes (chat and text completion), whole and as server-sent
events, and the stream that sends the first model's answer while the policy judges it.

With ``stream = "first"`` (or the ``x-triage-stream: first`` header) the first model's answer
streams as it is generated; if the policy then escalates, a chunk carrying
``triage.retract`` (the number of characters to drop) precedes the accepted answer. Only
clients that read that field should ask for it. The status line waits for the first
token: a request that fails before any text gets its error status (429, 502, ...) as a
non-streamed request would; a failure after the stream has started arrives as an error
event inside the 200 stream (the status line is gone by then). A client that goes away
cancels the request, upstream calls included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from llmtriage.data.jsontext import dumps
from llmtriage.serving.requests import CLIENT_GONE, Failure, Job, RequestPath
from llmtriage.serving.schemas import error


def error_body(failure: Failure) -> dict[str, Any]:
    return {"error": {"message": failure.message, "type": failure.kind, "code": failure.code}}


class Shape:
    """Chat or text completion: the same answer in the two OpenAI response shapes."""

    def __init__(self, job: Job, chat: bool, usage_chunk: bool = False) -> None:
        """``usage_chunk``: end a stream with a chunk holding the token usage (OpenAI's
        ``stream_options.include_usage``)."""
        self.job, self.chat, self.usage_chunk = job, chat, usage_chunk
        self.created = int(time.time())

    def whole(self) -> dict:
        job = self.job
        choice: dict[str, Any] = {"index": 0, "finish_reason": job.finish}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": job.answer}
        else:
            choice.update(text=job.answer, logprobs=None)
        return {"id": job.ident, "object": "chat.completion" if self.chat else
                "text_completion", "created": self.created, "model": job.info["answered_by"],
                "choices": [choice], "usage": job.usage, "triage": job.info}

    def chunk(self, delta: str | dict, finish: str | None = None,
              extra: dict | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.chat:
            choice["delta"] = delta if isinstance(delta, dict) else (
                {"content": delta} if delta else {})
        else:
            choice["text"] = delta
        return self._event([choice], extra)

    def _event(self, choices: list[dict[str, Any]], extra: dict | None = None) -> bytes:
        event = {"id": self.job.ident, "created": self.created,
                 "object": "chat.completion.chunk" if self.chat else "text_completion",
                 "model": self.job.info.get("answered_by", self.job.policy_name),
                 "choices": choices}
        if extra:
            event.update(extra)
        return b"data: " + dumps(event) + b"\n\n"

    def end(self) -> bytes:
        """The stream's last chunks: the finish reason and the trace, the usage if asked
        for (no choices, as OpenAI sends it), then [DONE]."""
        last = self.chunk("", finish=self.job.finish, extra={"triage": self.job.info})
        if self.usage_chunk:
            last += self._event([], {"usage": self.job.usage})
        return last + b"data: [DONE]\n\n"

    async def events(self, answer: str) -> AsyncIterator[bytes]:
        """The accepted answer as chunks, word by word, then [DONE]."""
        yield self.chunk({"role": "assistant", "content": ""} if self.chat else "")
        for i, word in enumerate(answer.split(" ")):
            yield self.chunk(word if i == 0 else " " + word)
        yield self.end()


async def disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def first_stream(path: RequestPath, job: Job, shape: Shape, request: Request
                       ) -> Response:
    """The first model's answer as it is generated, corrected if the policy escalates;
    an error response instead if the request fails before its first token."""
    deltas: asyncio.Queue[str | None] = asyncio.Queue()
    task = asyncio.create_task(path.attempt(job, deltas.put_nowait))
    gone = asyncio.ensure_future(disconnected(request))
    while True:
        first = asyncio.ensure_future(deltas.get())
        await asyncio.wait({first, task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not (first.done() and first.result() is None):
            break  # a call that failed before its first token has nothing to retract
    gone_now = gone.done()
    gone.cancel()
    if gone_now and not task.done():
        first.cancel()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return error(CLIENT_GONE, "client disconnected", "client_closed")
    if task.done() and not first.done():
        first.cancel()
        failed = task.result()
        await path.logged(job)
        if failed is not None:
            return error(failed.status, failed.message, failed.kind, failed.code,
                         failed.retry_after)
    return StreamingResponse(_first_events(path, task, first, deltas, job, shape),
                             media_type="text/event-stream",
                             headers={"x-triage-id": job.ident})


async def _first_events(path: RequestPath, task: asyncio.Task, first: asyncio.Future,
                        deltas: asyncio.Queue, job: Job, shape: Shape
                        ) -> AsyncIterator[bytes]:
    try:
        yield shape.chunk({"role": "assistant", "content": ""} if shape.chat else "")
        sent: list[str] = []
        finished = False
        getter = first
        while not finished:
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            batch = [getter.result()] if getter.done() else []
            if not getter.done():  # the policy is done: it will put nothing more
                getter.cancel()
                finished = True
                while not deltas.empty():
                    batch.append(deltas.get_nowait())
            else:
                getter = asyncio.ensure_future(deltas.get())
            for delta in batch:
                if delta is None:  # that call failed; what was sent is void
                    yield shape.chunk("", extra={"triage": {"retract": len("".join(sent))}})
                    sent = []
                else:
                    sent.append(delta)
                    yield shape.chunk(delta)
        failed = task.result()
        await path.logged(job)  # the end of the stream is its acknowledgement
        if failed is not None:
            yield b"data: " + dumps(error_body(failed)) + b"\n\n"
            return
        streamed = "".join(sent)
        if streamed != job.answer:  # the policy escalated: the accepted answer replaces it
            if streamed:
                yield shape.chunk("", extra={"triage": {"retract": len(streamed)}})
            yield shape.chunk(job.answer)
        yield shape.end()
    finally:  # the client went away (or the stream ended): no work outlives it
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
