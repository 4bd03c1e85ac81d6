"""A minimal OpenAI-compatible upstream that injects faults, run as a real process.

    python tests/servers/upstream.py PORT

The ``model`` field picks the behaviour: ``ok``; ``flaky-500`` (500 twice per prompt, then
ok); ``always-500``; ``rate-429`` (429 with Retry-After: 1 once per prompt, then ok);
``always-429`` (429 with Retry-After: 7, every time); ``hang`` (never answers in time);
``malformed`` (200 with a body that is not JSON); ``wrong-shape`` (JSON without choices);
``deep`` (JSON nested 50,000 levels deep); ``endless`` (with stream: 4 KB deltas for ever);
``stream-drop`` (with stream: one chunk, then the connection is cut); ``unsure`` (answers
"pang" with low logprobs); ``slow`` (answers after 1.5 s); ``echo-auth`` (a 500 whose body
repeats the Authorization header, as a careless upstream might); ``switch`` (behaves as set
by ``POST /switch/MODE``, MODE one of ok, 500, hang, drop, malformed: a model that fails and
recovers on command); ``trickle`` (a 200 whose body arrives one byte every half second, for
a minute); ``usage-inf``, ``usage-negative``, ``usage-huge`` (a valid answer whose usage
counts are 1e999, -5e6 or 2**70); ``bad-chunk`` (with stream: a chunk whose ``choices`` is
not a list); ``bloated`` (a valid two-token answer padded with 15 MiB of logprobs);
``not-found`` (404, as for a model the upstream does not have); ``echo-sampling``
(answers with the ``stop`` and ``temperature`` it was sent, as JSON). ``GET
/attempts`` returns how many requests each (model, prompt) got; ``GET /open`` how many
requests are being answered now.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ATTEMPTS: Counter = Counter()
OPEN = {"now": 0}
LOCK = threading.Lock()
ANSWER = "pong"
SWITCH = {"mode": "ok"}
HANG_S = 10


def completion(model: str, text: str = ANSWER, logprob: float = -0.1) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "model": model,
        "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": text},
            "logprobs": {"content": [
                {"token": text[:2], "logprob": logprob, "top_logprobs": [
                    {"token": text[:2], "logprob": logprob}, {"token": "pi", "logprob": -2.5}]},
                {"token": text[2:], "logprob": 2 * logprob, "top_logprobs": [
                    {"token": text[2:], "logprob": 2 * logprob}]},
            ]},
        }],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }


_BLOATED: list[bytes] = []


def bloated() -> bytes:
    """A valid answer whose logprobs run to 15 MiB (made once): about 170 MB parsed."""
    if not _BLOATED:
        padded = completion("bloated")
        entry = {"token": "po", "logprob": -0.1, "bytes": [112, 111], "top_logprobs": []}
        padded["choices"][0]["logprobs"]["content"] += [entry] * ((15 << 20) // 75)
        _BLOATED.append(json.dumps(padded).encode())
    return _BLOATED[0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/attempts":
            with LOCK:
                data = {f"{m}|{p}": n for (m, p), n in ATTEMPTS.items()}
            self._send(200, json.dumps(data).encode())
        elif self.path == "/open":
            self._send(200, json.dumps(OPEN).encode())
        elif self.path in ("/health", "/v1/models"):
            self._send(200, b'{"data": [{"id": "ok"}]}')
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        with LOCK:
            OPEN["now"] += 1
        try:
            self._post()
        except OSError:  # the gateway hung up (a cancelled call): nothing to answer
            pass
        finally:
            with LOCK:
                OPEN["now"] -= 1

    def _post(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        if self.path.startswith("/switch/"):
            SWITCH["mode"] = self.path.rsplit("/", 1)[1]
            self._send(200, json.dumps(SWITCH).encode())
            return
        body = json.loads(raw or b"{}")
        model = body.get("model", "ok")
        prompt = (body.get("messages") or [{}])[-1].get("content", "")
        with LOCK:
            ATTEMPTS[(model, prompt)] += 1
            n = ATTEMPTS[(model, prompt)]
        if model == "switch":
            model = {"500": "always-500", "drop": "drop"}.get(SWITCH["mode"], SWITCH["mode"])
        if model == "hang":
            self._wait_unless_gone(HANG_S)
            return
        if model == "trickle":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(120):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.5)
            return
        if model == "not-found":
            self._send(404, b'{"error": {"message": "The model does not exist"}}')
            return
        if model.startswith("usage-"):
            value = {"usage-inf": "1e999", "usage-negative": "-5000000",
                     "usage-huge": str(2**70)}[model]
            text = json.dumps(completion(model)).replace(
                '"prompt_tokens": 7', f'"prompt_tokens": {value}').replace(
                '"completion_tokens": 2', f'"completion_tokens": {value}')
            self._send(200, text.encode())
            return
        if model == "bad-chunk" and body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b'data: {"choices": "oops"}\n\ndata: [DONE]\n\n')
            self.wfile.flush()
            self.close_connection = True
            return
        if model == "slow":
            time.sleep(1.5)
        if model == "unsure":
            if body.get("stream"):
                self._stream(model, "pang", -3.0)
            else:
                self._send(200, json.dumps(completion(model, "pang", -3.0)).encode())
            return
        if model == "echo-sampling":  # answers with the stop sequences and temperature sent
            sent = {k: body.get(k) for k in ("stop", "temperature")}
            self._send(200, json.dumps(completion(model, json.dumps(sent))).encode())
            return
        if model == "echo-auth":
            echo = {"error": {"message": f"bad key {self.headers.get('Authorization')}"}}
            self._send(500, json.dumps(echo).encode())
            return
        if model == "drop" and not body.get("stream"):  # headers, half a body, then gone
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"id": "chatcmpl-half", "choi')
            self.wfile.flush()
            self.connection.shutdown(2)
            self.connection.close()
            return
        if model == "always-500" or (model == "flaky-500" and n <= 2):
            self._send(500, b'{"error": {"message": "upstream exploded"}}')
            return
        if model == "always-429":
            self._send(429, b'{"error": {"message": "quota exhausted"}}', {"Retry-After": "7"})
            return
        if model == "rate-429" and n == 1:
            self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "1"})
            return
        if model == "malformed":
            self._send(200, b"{not json at all")
            return
        if model == "deep":  # valid JSON, nested past any parser's depth
            self._send(200, b'{"choices": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
            return
        if model == "bloated":
            self._send(200, bloated())
            return
        if model == "wrong-shape":
            self._send(200, b'{"id": "x", "object": "chat.completion"}')
            return
        if model == "endless" and body.get("stream"):
            self._endless()
            return
        if body.get("stream"):
            self._stream(model)
            return
        self._send(200, json.dumps(completion(model)).encode())

    def _wait_unless_gone(self, seconds: float) -> None:
        """Sleep, but stop as soon as the caller hangs up (as a real server's work is
        cancelled when its client goes), so tests can see abandoned calls end."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            readable, _, _ = select.select([self.connection], [], [], 0.1)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return
                except OSError:
                    return

    def _stream(self, model: str, text: str = ANSWER, logprob: float = -0.1) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunks = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text[:2]},
                          "logprobs": {"content": [{"token": text[:2],
                                                    "logprob": logprob}]}}]},
            {"choices": [{"index": 0, "delta": {"content": text[2:]}, "finish_reason": "stop",
                          "logprobs": {"content": [{"token": text[2:],
                                                    "logprob": 2 * logprob}]}}]},
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
        ]
        for i, chunk in enumerate(chunks):
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            if model in ("stream-drop", "drop") and i == 0:
                self.connection.shutdown(2)
                self.connection.close()
                return
            time.sleep(0.05)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


    def _endless(self) -> None:
        """A stream that never ends: 4 KB deltas as fast as they are read, until the
        client goes away."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = {"choices": [{"index": 0, "delta": {"content": "more " * 800}}]}
        line = f"data: {json.dumps(chunk)}\n\n".encode()
        try:
            while True:
                self.wfile.write(line)
        except OSError:
            self.close_connection = True


class Server(ThreadingHTTPServer):
    #: A real server's listen backlog (the standard library's is 5: a burst of new
    #: connections would see dropped SYNs and second-long connect retries, a fault nobody
    #: asked this server to inject).
    request_queue_size = 1024


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
