"""Embedded llama.cpp: GGUF models loaded in this process through ``xllamacpp``.

Several models can be loaded at once. Each runs at most ``max_concurrency`` generations
(llama.cpp batches them in one decode), and a process-wide limit on how many *models* compute
at once keeps them from running on more threads than there are cores: on two cores, two
models decoding together would each run at half speed and both answer late. A model holds
its CPU slot while it has requests in flight, so its concurrent requests batch together.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from llmtriage.backends.catalog import Catalog, ModelSpec
from llmtriage.backends.live import BackendError, ChatRequest, Completion, parse_chat_response
from llmtriage.backends.zoo import ensure, local_model

#: The first bytes of every GGUF file.
GGUF_MAGIC = b"GGUF"


def model_path(spec: ModelSpec) -> Path:
    """The verified GGUF file of a catalog entry (assembled into the cache if needed)."""
    if spec.local:
        return ensure(local_model(spec.local))
    assert spec.path is not None
    if not spec.path.is_file():
        raise BackendError(f"{spec.name}: GGUF file {spec.path} does not exist")
    with spec.path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:  # llama.cpp would say only "failed to init server"
            raise BackendError(f"{spec.name}: {spec.path} is not a GGUF model file")
    return spec.path


def refused(name: str, error: Any) -> BackendError:
    """llama.cpp's error reply as a failed call. A 4xx (a prompt past the context window)
    keeps its status: the request was refused, the model is healthy, so the breaker does
    not count it (else a client sending long prompts would open the model's circuit for
    everyone)."""
    code, message = None, str(error)
    if isinstance(error, dict):
        code, message = error.get("code"), str(error.get("message", error))
    status = code if isinstance(code, int) and 400 <= code < 600 else None
    return BackendError(f"{name}: llama.cpp error: {message[:300]}", status=status)


class LlamaCppBackend:
    def __init__(self, catalog: Catalog, cpu_slots: int | None = None) -> None:
        self.catalog = catalog
        self._servers: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        cores = os.cpu_count() or 1
        threads = max((m.n_threads for m in catalog.models if m.backend == "llamacpp"),
                      default=1)
        #: How many models may compute at once without oversubscribing the cores.
        self.cpu_slots = cpu_slots or max(1, cores // threads)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._per_model: dict[str, asyncio.Semaphore] = {}
        self._gates: dict[str, asyncio.Lock] = {}
        self._active: dict[str, int] = {}

    # -- loading -------------------------------------------------------------------------

    def load(self, name: str) -> Any:
        """Load (once) and return the llama.cpp server of a model; safe from any thread."""
        with self._load_lock:
            if name in self._servers:
                return self._servers[name]
            spec = self.catalog.spec(name)
            import xllamacpp

            params = xllamacpp.CommonParams()
            params.model.path = str(model_path(spec))
            params.n_parallel = spec.max_concurrency
            params.n_ctx = spec.context_length * spec.max_concurrency
            params.cpuparams.n_threads = spec.n_threads
            params.cpuparams_batch.n_threads = spec.n_threads
            params.warmup = False
            # llama.cpp logs every load and request to stderr; TRIAGE_LLAMA_LOGS=1 keeps it.
            params.verbosity = 3 if os.environ.get("TRIAGE_LLAMA_LOGS") else -1
            try:
                self._servers[name] = xllamacpp.Server(params)
            except RuntimeError as exc:  # a damaged file, or one this llama.cpp cannot read
                raise BackendError(f"{name}: llama.cpp could not load "
                                   f"{params.model.path}: {exc}") from None
            return self._servers[name]

    def loaded(self) -> list[str]:
        return list(self._servers)

    # -- calls ---------------------------------------------------------------------------

    def _own_limit(self, name: str) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # asyncio primitives belong to one event loop
            self._loop, self._per_model, self._gates, self._active = loop, {}, {}, {}
            self._slots = asyncio.Semaphore(self.cpu_slots)
        if name not in self._per_model:
            self._per_model[name] = asyncio.Semaphore(self.catalog.spec(name).max_concurrency)
            self._gates[name] = asyncio.Lock()
            self._active[name] = 0
        return self._per_model[name]

    async def _enter(self, name: str) -> None:
        """Take a CPU slot for the model if it is not computing yet."""
        async with self._gates[name]:
            if self._active[name] == 0:
                assert self._slots is not None
                await self._slots.acquire()
            self._active[name] += 1

    def _leave(self, name: str) -> None:
        self._active[name] -= 1
        if self._active[name] == 0:
            assert self._slots is not None
            self._slots.release()

    def complete_sync(self, name: str, request: ChatRequest) -> Completion:
        """One blocking generation (llama.cpp releases the GIL while it decodes)."""
        spec = self.catalog.spec(name)
        server = self.load(name)
        start = time.perf_counter()
        try:
            data = server.handle_chat_completions(request.payload())
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"{name}: llama.cpp refused the request: {exc}") from None
        latency_ms = (time.perf_counter() - start) * 1000
        if isinstance(data, dict) and "error" in data:
            raise refused(name, data["error"])
        text, tokens_in, tokens_out, logprobs, finish = parse_chat_response(data)
        timings = data.get("timings") or {}
        busy_s = (timings.get("prompt_ms", 0.0) + timings.get("predicted_ms", 0.0)) / 1000
        if spec.energy_j_per_token is not None:
            energy = spec.energy_j_per_token * (tokens_in + tokens_out)
        else:  # busy CPU seconds (llama.cpp's own timings) x threads x watts per core
            energy = busy_s * spec.n_threads * self.catalog.watts_per_core
        cost = energy / 3.6e6 * self.catalog.usd_per_kwh
        cost += (tokens_in * spec.price_in + tokens_out * spec.price_out) / 1e6
        return Completion(
            model=name, text=text, tokens_in=tokens_in, tokens_out=tokens_out,
            latency_ms=latency_ms, cost_usd=cost, energy_j=energy, logprobs=logprobs,
            finish_reason=finish, extra={"timings": timings},
        )

    async def complete(self, name: str, request: ChatRequest) -> Completion:
        own = self._own_limit(name)
        if name not in self._servers:
            await asyncio.to_thread(self.load, name)
        async with own:
            await self._enter(name)
            try:
                return await asyncio.to_thread(self.complete_sync, name, request)
            finally:
                self._leave(name)

    async def aclose(self) -> None:
        self._servers.clear()

