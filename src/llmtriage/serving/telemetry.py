"""Prometheus metrics of the gateway: requests, latency, calls and cost per model,
escalations, fallbacks, the queue and each model's circuit. One registry per app, so two
gateways in a process do not share counters."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llmtriage.backends.breaker import CircuitBreaker

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
CIRCUIT_CODES = {"closed": 0, "half-open": 1, "open": 2}


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("triage_requests_total", "Requests by policy and outcome",
                                ["policy", "status"], registry=self.registry)
        self.latency = Histogram("triage_request_seconds", "End-to-end latency by policy",
                                 ["policy"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.calls = Counter("triage_model_calls_total", "Model calls", ["model"],
                             registry=self.registry)
        self.cost = Counter("triage_model_cost_usd_total", "Cost of model calls (USD)",
                            ["model"], registry=self.registry)
        self.escalations = Counter("triage_escalations_total",
                                   "Requests that called more than one model", ["policy"],
                                   registry=self.registry)
        self.fallbacks = Counter("triage_fallbacks_total",
                                 "Calls answered by another model because theirs failed",
                                 ["model"], registry=self.registry)
        self.in_flight = Gauge("triage_in_flight", "Requests running",
                               registry=self.registry)
        self.queued = Gauge("triage_queued", "Requests waiting for a slot",
                            registry=self.registry)
        self.circuit = Gauge("triage_circuit_state",
                             "Circuit per model: 0 closed, 1 half-open, 2 open", ["model"],
                             registry=self.registry)
        self.log_errors = Counter("triage_log_errors_total",
                                  "Request-log writes that failed (their spend is kept)",
                                  registry=self.registry)
        self.cache_hits = Counter("triage_cache_hits_total",
                                  "Requests answered from the response cache", ["match"],
                                  registry=self.registry)
        self.cache_saved = Counter("triage_cache_saved_usd_total",
                                   "What the cached answers cost when they were made (USD)",
                                   registry=self.registry)
        self.trips = Gauge("triage_circuit_trips", "Times a model's circuit opened",
                           ["model"], registry=self.registry)
        #: Each metric's series by label values, looked up once (``labels`` validates
        #: and locks at every call). Bounded: the values are configured names.
        self._series: dict[tuple[object, ...], Any] = {}

    def _of(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*labels)
        return series

    def observe(self, policy: str, seconds: float, steps: list[dict]) -> None:
        self._of(self.requests, policy, "200").inc()
        self._of(self.latency, policy).observe(seconds)
        for step in steps:
            self._of(self.calls, step["model"]).inc()
            self._of(self.cost, step["model"]).inc(step["cost_usd"])
            if step.get("fallback_from"):
                self._of(self.fallbacks, step["fallback_from"]).inc()
        if len(steps) > 1:
            self._of(self.escalations, policy).inc()

    def cache_hit(self, match: str, saved_usd: float) -> None:
        self.cache_hits.labels(match).inc()
        self.cache_saved.inc(saved_usd)

    def failed(self, policy: str, status: int) -> None:
        self._of(self.requests, policy, str(status)).inc()

    def render(self, running: int, waiting: int, breaker: CircuitBreaker | None) -> bytes:
        self.in_flight.set(running)
        self.queued.set(waiting)
        if breaker is not None:
            for model, state in breaker.snapshot().items():
                self.circuit.labels(model).set(CIRCUIT_CODES[state])
                self.trips.labels(model).set(breaker.trips(model))
        return generate_latest(self.registry)
