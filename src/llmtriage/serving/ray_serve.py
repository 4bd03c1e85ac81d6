"""The gateway on Ray Serve: the same FastAPI app, as the ingress deployment with N replicas.

``triage serve --ray ADDRESS --replicas N`` joins the cluster and runs N copies of the app
that ``triage serve`` runs alone, behind Serve's HTTP proxy. Each replica builds its own
pool and policies from the config file (a path every node can read); keys' limits, sessions,
scores, learning and circuits agree across replicas through ``state_url`` (Redis), and the
request log is one when ``database_url`` (PostgreSQL) is set: without them each replica
keeps its own, as separate processes would. Serve's proxy, not uvicorn, speaks HTTP here, so
the connection cap and header deadline of :mod:`.server` do not apply; put the same reverse
proxy in front.

Ray is an optional dependency (the ``scale`` extra), imported only here.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from llmtriage.data.errors import DataError


def deploy(config: Path | None, address: str, replicas: int, host: str, port: int,
           cpus_per_replica: float = 0.5) -> None:
    """Run the gateway on the cluster until SIGTERM or SIGINT, then take it down."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise DataError(f"--ray needs Ray Serve ({exc}): pip install -e '.[scale]'") from None
    config_path = str(config.resolve()) if config is not None else None

    def build_app():  # noqa: ANN202 - runs in each replica
        from llmtriage.serving.app import build_gateway
        from llmtriage.serving.config import load_gateway_config

        cfg = load_gateway_config(config_path)
        return build_gateway(cfg, cfg.catalog())[0]

    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DataError(f"cannot join the Ray cluster at {address}: {exc}") from None
    serve.start(http_options={"host": host, "port": port})
    from llmtriage.serving.config import load_gateway_config

    settings = load_gateway_config(config_path).gateway
    gateway = serve.deployment(
        serve.ingress(build_app)(), name="triage-gateway", num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus_per_replica},
        # Each replica admits and queues as the single process does (Serve's default of 5
        # requests per replica would make its proxy the queue).
        max_ongoing_requests=settings.max_in_flight + settings.max_queue)
    serve.run(gateway.bind(), name="triage", route_prefix="/")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
