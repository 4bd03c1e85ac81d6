"""The gateway on Ray Serve: the same ASGI app as the ingress deployment with N replicas,
each embedded model as its own deployment, and one batching embedder for the routers.

``triage serve --ray ADDRESS --replicas N`` joins the cluster and deploys one application:

- ``triage-gateway``: N copies of the app that ``triage serve`` runs alone, behind Serve's
  HTTP proxy. Each builds its pool and policies from the config file (a path every node can
  read); keys' limits, sessions, scores, learning and circuits agree across replicas through
  ``state_url`` (Redis), and the request log is one when ``database_url`` (PostgreSQL) is
  set: without them each replica keeps its own, as separate processes would.
- ``triage-model-<name>``, one per embedded (llama.cpp) model of the config: the model
  loaded once per replica, answering one call at a time, each replica reserving the
  model's ``n_threads`` CPUs; Serve adds replicas (up to ``[ray] model_max_replicas``) when
  calls queue. Gateway replicas reach it through a handle, so a model is loaded where the
  cluster has room, not once per gateway replica.
- ``triage-embedder``, when a router embeds with MiniLM: the embedder loaded once; each
  query's embedding is a call that Serve batches with the calls of other requests and
  other gateway replicas (``[ray] embed_batch``, ``embed_wait_ms``).

Serve's proxy, not uvicorn, speaks HTTP here, so the connection cap, header deadline and
header bounds of :mod:`.server` do not apply; put the same reverse proxy in front.

Ray is an optional dependency (the ``scale`` extra), imported only here.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmtriage.backends.live import BackendError, ChatRequest, Completion
from llmtriage.backends.ray_cluster import join
from llmtriage.data.errors import DataError
from llmtriage.signals.embedder import MiniLMEmbedder, embedder_named

APP = "triage"
GATEWAY = "triage-gateway"
EMBEDDER = "triage-embedder"
#: How long a gateway replica waits for the shared embedder before failing the decision.
EMBED_TIMEOUT_S = 30.0


def model_deployment(model: str) -> str:
    return f"triage-model-{model}"


class ServeModels:
    """The embedded models, answered by their own Serve deployments (a ``LiveBackend``)."""

    def __init__(self, handles: dict[str, Any]) -> None:
        self.handles = handles

    async def complete(self, model: str, request: ChatRequest) -> Completion:
        try:
            return await self.handles[model].complete.remote(request)
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001 - a replica lost, an actor error: a failed call
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BackendError):
                raise cause from None
            raise BackendError(f"{model}: its deployment failed: {type(exc).__name__}",
                               retryable=True) from None

    async def aclose(self) -> None:
        pass


class ServeEmbedder:
    """A router's embedder that asks the shared embedder deployment, one call per text (so
    Serve batches them with other requests'). It blocks, so it must be called off the event
    loop: the gateway decides for embedding policies on worker threads."""

    def __init__(self, handle: Any, name: str, dim: int) -> None:
        self.handle, self.name, self.dim = handle, name, dim

    def embed(self, texts: list[str] | np.ndarray) -> np.ndarray:
        calls = [self.handle.embed.remote(str(t)) for t in texts]
        try:
            vectors = [call.result(timeout_s=EMBED_TIMEOUT_S) for call in calls]
        except Exception as exc:  # noqa: BLE001 - the policy run fails with a clear message
            raise BackendError(f"the shared embedder failed: {type(exc).__name__}",
                               retryable=True) from None
        return np.stack(vectors) if vectors else np.empty((0, self.dim), np.float32)


def _deployments(serve: Any) -> tuple[type, type]:
    """The model and embedder deployment classes (defined once Ray is imported)."""

    class ModelServer:
        """One embedded model, loaded once per replica; one call at a time."""

        def __init__(self, config_path: str | None, model: str) -> None:
            from llmtriage.backends.llamacpp import LlamaCppBackend
            from llmtriage.serving.config import load_gateway_config

            self.model = model
            self.backend = LlamaCppBackend(load_gateway_config(config_path).catalog())
            self.backend.load(model)

        def complete(self, request: ChatRequest) -> Completion:  # Serve runs it on a thread
            return self.backend.complete_sync(self.model, request)

    class EmbedderServer:
        """MiniLM, loaded once; every call is one text, embedded in batches."""

        def __init__(self, max_tokens: int, batch: int, wait_s: float) -> None:
            self.embedder = MiniLMEmbedder(max_tokens=max_tokens)
            self.embed.set_max_batch_size(batch)
            self.embed.set_batch_wait_timeout_s(wait_s)
            self.texts = self.batches = 0

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
        async def embed(self, texts: list[str]) -> list[np.ndarray]:
            self.texts += len(texts)
            self.batches += 1
            return list(await asyncio.to_thread(self.embedder.encode, texts))

        def counts(self) -> dict[str, int]:
            """Texts embedded and batches run: what batching saved."""
            return {"texts": self.texts, "batches": self.batches}

    return ModelServer, EmbedderServer


def wait_for_routes(serve: Any, host: str, port: int, stop: threading.Event,
                    timeout_s: float = 120.0, in_a_row: int = 20) -> None:
    """Return once every proxy Serve runs is healthy and the gateway's route answers
    ``in_a_row`` probes in a row: ``serve.run`` returns when the replicas are up, but each
    node's proxy starts and learns the route a moment later, and one still starting when
    the routes are probed joins the shared port afterwards and answers 404 to what it is
    handed. Each probe is a new connection, so that every proxy sharing the port gets
    asked."""
    import httpx

    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}/-/routes"
    deadline, good = time.monotonic() + timeout_s, 0
    while good < in_a_row and not stop.is_set():
        proxies = serve.status().proxies
        if not proxies or any(state != "HEALTHY" for state in proxies.values()):
            good = 0
        else:
            try:
                good = good + 1 if "/" in httpx.get(url, timeout=2).json() else 0
            except (httpx.HTTPError, ValueError):
                good = 0
        if time.monotonic() > deadline:
            states = {node[:8]: str(state) for node, state in proxies.items()}
            raise DataError(f"Serve's proxies on port {port} did not all route to the "
                            f"gateway within {timeout_s:g} s (proxies: {states})")
        time.sleep(0.05)


def deploy(config: Path | None, address: str, replicas: int, host: str, port: int) -> None:
    """Run the gateway on the cluster until SIGTERM or SIGINT, then take it down."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise DataError(f"--ray needs Ray Serve ({exc}): pip install -e '.[scale]'") from None
    from llmtriage.policies.routers.base import quality_routers
    from llmtriage.serving.config import build_policies, load_gateway_config

    config_path = str(config.resolve()) if config is not None else None
    cfg = load_gateway_config(config_path)
    catalog = cfg.catalog()
    local = [m.name for m in catalog.models if m.backend == "llamacpp"]
    # Which MiniLM the routers embed with (the policies are built here once to see).
    minilm = sorted({r.embedder_.name for p in build_policies(cfg, catalog).values()
                     for r in quality_routers(p)
                     if r.embedder_ is not None and r.embedder_.name.startswith("all-MiniLM")})
    if len(minilm) > 1:
        raise DataError(f"the routers embed with {len(minilm)} MiniLM settings ({minilm}); "
                        "on Ray they share one embedder: refit them with one")

    def build_app():  # noqa: ANN202 - runs in each gateway replica
        from ray import serve as replica_serve

        from llmtriage.serving.app import build_gateway

        here = load_gateway_config(config_path)
        handles = {m: replica_serve.get_deployment_handle(model_deployment(m), APP)
                   for m in local}
        embedder = None
        if minilm:
            embedder = ServeEmbedder(replica_serve.get_deployment_handle(EMBEDDER, APP),
                                     minilm[0], MiniLMEmbedder.dim)
        backends = {"llamacpp": ServeModels(handles)} if local else None
        return build_gateway(here, here.catalog(), backends, embedder)[0]

    join(address)
    # From here on SIGTERM and SIGINT take the application down (Ray's own handler would
    # end the process and leave Serve running on the cluster).
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        run_application(serve, config_path, cfg, local, minilm, build_app, replicas)
        wait_for_routes(serve, host, port, stop)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


def run_application(serve: Any, config_path: str | None, cfg: Any, local: list[str],
                    minilm: list[str], build_app: Any, replicas: int) -> None:
    """One Serve application: the gateway as its ingress, bound to the models' and the
    embedder's deployments (which makes them part of it; replicas reach them by name)."""
    catalog, layout = cfg.catalog(), cfg.ray
    model_server, embedder_server = _deployments(serve)
    children: dict[str, Any] = {}
    for name in local:
        spec = catalog.spec(name)
        children[model_deployment(name)] = serve.deployment(
            model_server, name=model_deployment(name),
            ray_actor_options={"num_cpus": spec.n_threads},
            max_ongoing_requests=spec.max_concurrency,
            autoscaling_config={"min_replicas": 1,
                                "max_replicas": layout.model_max_replicas,
                                "target_ongoing_requests": layout.model_target_queue},
        ).bind(config_path, name)
    if minilm:
        children[EMBEDDER] = serve.deployment(
            embedder_server, name=EMBEDDER, ray_actor_options={"num_cpus": 1},
            max_ongoing_requests=max(64, 4 * layout.embed_batch),
        ).bind(embedder_named(minilm[0]).max_tokens, layout.embed_batch,
               layout.embed_wait_ms / 1000)
    gateway = serve.deployment(
        serve.ingress(build_app)(), name=GATEWAY, num_replicas=replicas,
        ray_actor_options={"num_cpus": layout.gateway_cpus},
        # Each replica admits and queues as the single process does (Serve's default of 5
        # requests per replica would make its proxy the queue).
        max_ongoing_requests=cfg.gateway.max_in_flight + cfg.gateway.max_queue)
    serve.run(gateway.bind(*children.values()), name=APP, route_prefix="/")
