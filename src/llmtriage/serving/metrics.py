"""Prometheus metrics of the gateway: requests, latency, calls and cost per model,
escalations. One registry per app, so two gateways in a process do not share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


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

    def observe(self, policy: str, seconds: float, steps: list[dict]) -> None:
        self.requests.labels(policy, "ok").inc()
        self.latency.labels(policy).observe(seconds)
        for step in steps:
            self.calls.labels(step["model"]).inc()
            self.cost.labels(step["model"]).inc(step["cost_usd"])
        if len(steps) > 1:
            self.escalations.labels(policy).inc()

    def failed(self, policy: str, status: int) -> None:
        self.requests.labels(policy, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
