"""The gateway's configuration: one TOML file holding the model catalog and the gateway.

A catalog file (``[[models]]``, see :mod:`llmtriage.backends.catalog`) plus, all optional::

    [gateway]
    max_in_flight = 64          # requests running at once
    max_queue = 256             # more waiting than this: 429 with Retry-After
    request_log = "requests.sqlite"   # "" turns the log off
    log_text = false            # store prompts and answers (needed to retrain routers)
    sticky_sessions = true      # a conversation stays on the model that answered it
    stream = "accepted"         # or "first": stream the first model's answer as generated
    fallback = true             # a failing model is replaced by the next one
    breaker_failures = 5        # consecutive failures that open a model's circuit
    breaker_reset_s = 10        # how long it stays open before one probe call

    [[keys]]                    # no keys: no authentication (keep the gateway on loopback)
    name = "team-a"
    sha256 = "9f86d0..."        # `triage key` makes a key and prints this
    requests_per_minute = 600
    budget_usd = 20.0

    [[policies]]                # none: one cascade, "triage-cascade", over the catalog
    name = "cheap-first"
    kind = "cascade"            # cascade | router | bandit
    models = ["small", "large"]
    threshold = -0.5

Keys are stored hashed: a client's bearer token is hashed with SHA-256 and compared with
these. Keys are random 32-byte tokens, so a fast hash is enough (no password stretching).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmtriage.backends.catalog import Catalog, ModelSpec, default_catalog, problems, read_toml
from llmtriage.backends.pool import Confidence
from llmtriage.data.errors import DataError
from llmtriage.policies.base import Policy
from llmtriage.policies.cascades.ladder import DEFAULT_THRESHOLD
from llmtriage.signals.logprob import CONFIDENCES

if TYPE_CHECKING:
    from llmtriage.policies.routers.base import QualityRouter


def default_log_path() -> Path:
    root = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(root) / "llmtriage" / "requests.sqlite"


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_in_flight: int = Field(64, gt=0)
    max_queue: int = Field(256, ge=0)
    max_body_bytes: int = Field(1 << 20, gt=0)
    request_log: Path | None = Field(default_factory=default_log_path)
    log_text: bool = False
    sticky_sessions: bool = True
    session_ttl_s: float = Field(3600.0, gt=0)
    stream: Literal["accepted", "first"] = "accepted"
    fallback: bool = True
    breaker_failures: int = Field(5, gt=0)
    breaker_reset_s: float = Field(10.0, gt=0)
    max_tokens: int = Field(256, gt=0)
    #: On SIGTERM: stop accepting, finish in-flight requests for at most this long.
    shutdown_timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _log_off(self) -> GatewaySettings:
        if self.request_log is not None and str(self.request_log) in ("", "."):
            self.request_log = None
        return self


class ClientKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    requests_per_minute: float | None = Field(None, gt=0)
    budget_usd: float | None = Field(None, ge=0)


#: What the live confidence of a policy's steps is, by default: the raw cascade thresholds
#: the least likely token; policies fitted on a `triage collect` table read what it records.
DEFAULT_CONFIDENCE = {"cascade": "min_logprob", "calibrated-cascade": "mean_logprob",
                      "cascade-routing": "mean_logprob"}


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["cascade", "router", "bandit", "calibrated-cascade", "cascade-routing"]
    #: cascade, calibrated-cascade: the ladder, in order (default: the catalog's order);
    #: cascade-routing: the models it may call (default: the table's, in the catalog).
    models: list[str] | None = None
    #: cascade: the least likely token's logprob to accept (default -0.5);
    #: calibrated-cascade: the calibrated probability of being right to accept (default 0.8).
    threshold: float | None = None
    #: router: a trained artifact (`triage train`); lam overrides the one it was saved with.
    #: cascade-routing: the router whose predictions it starts from (else it fits `router`).
    artifact: Path | None = None
    lam: float | None = Field(None, ge=0)
    #: bandit: the outcome table its prior and feature map are fitted on (a load_table
    #: source); calibrated-cascade, cascade-routing: the table (with recorded confidences,
    #: as `triage collect` writes) their calibration and beliefs are fitted on.
    table: str | None = None
    alpha: float = Field(0.1, ge=0)
    #: cascade-routing without an artifact: the router to fit on the table.
    router: Literal["knn", "logistic"] = "knn"
    max_calls: int = Field(3, gt=0)
    #: The live confidence the policy's steps get (default: see DEFAULT_CONFIDENCE); it must
    #: be the statistic its table's confidence column holds.
    confidence: Literal["mean_logprob", "min_logprob"] | None = None

    @model_validator(mode="after")
    def _needs(self) -> PolicySpec:
        if self.kind == "router" and self.artifact is None:
            raise ValueError("a router policy needs 'artifact'")
        if self.kind in ("bandit", "calibrated-cascade", "cascade-routing") \
                and self.table is None:
            raise ValueError(f"a {self.kind} policy needs 'table'")
        if self.kind == "calibrated-cascade" and self.threshold is not None \
                and not 0.0 <= self.threshold <= 1.01:
            raise ValueError("a calibrated-cascade's threshold is a probability of being "
                             f"right, between 0 and 1, not {self.threshold}")
        return self

    def live_confidence(self) -> str:
        return self.confidence or DEFAULT_CONFIDENCE.get(self.kind, "min_logprob")


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    watts_per_core: float | None = None
    usd_per_kwh: float | None = None
    models: list[ModelSpec] | None = None
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    keys: list[ClientKey] = Field(default_factory=list)
    policies: list[PolicySpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> GatewayConfig:
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError("key names must be unique")
        policy_names = [p.name for p in self.policies]
        if len(set(policy_names)) != len(policy_names):
            raise ValueError("policy names must be unique")
        models = {m.name for m in self.models} if self.models else None
        if models is not None and models & set(policy_names):
            raise ValueError("a policy may not share its name with a model: "
                             f"{sorted(models & set(policy_names))}")
        return self

    def catalog(self) -> Catalog:
        if self.models is None:
            return default_catalog()
        extra = {k: v for k, v in (("watts_per_core", self.watts_per_core),
                                   ("usd_per_kwh", self.usd_per_kwh)) if v is not None}
        return Catalog(models=self.models, **extra)


def load_gateway_config(path: str | Path | None) -> GatewayConfig:
    if path is None:
        return GatewayConfig()
    path = Path(path)
    try:
        config = GatewayConfig.model_validate(read_toml(path, "config"))
    except ValidationError as exc:
        raise DataError(f"config {path}: {problems(exc)}") from None
    base = path.parent
    for spec in config.policies:  # relative paths are relative to the config file
        if spec.artifact is not None and not spec.artifact.is_absolute():
            spec.artifact = base / spec.artifact
        if spec.table is not None and re.match(r"^[\w-]+:", spec.table) is None \
                and not Path(spec.table).is_absolute():
            spec.table = str(base / spec.table)
    log = config.gateway.request_log
    if log is not None and not log.is_absolute():
        config.gateway.request_log = base / log
    return config


def build_policies(config: GatewayConfig, catalog: Catalog,
                   threshold: float = DEFAULT_THRESHOLD) -> dict[str, Policy]:
    """The configured policies, fitted or loaded; by default one cascade over the catalog
    (accepting an answer whose least likely token has at least ``threshold`` logprob)."""
    from llmtriage.policies.baselines import ThresholdCascade

    specs = config.policies or [PolicySpec(name="triage-cascade", kind="cascade",
                                           threshold=threshold)]
    names = set(catalog.names())
    policies: dict[str, Policy] = {}
    for spec in specs:
        for model in spec.models or []:
            if model not in names:
                raise DataError(f"policy {spec.name!r}: no model {model!r} in the catalog; "
                                f"it has {sorted(names)}")
        if spec.kind == "cascade":
            policies[spec.name] = ThresholdCascade(
                spec.models or catalog.names(),
                threshold=threshold if spec.threshold is None else spec.threshold)
        elif spec.kind == "router":
            policies[spec.name] = _router_artifact(spec, names)
            if spec.lam is not None:
                policies[spec.name] = policies[spec.name].with_params(lam=spec.lam)
        else:
            policies[spec.name] = _fitted(spec, names, catalog)
    return policies


def policy_confidences(config: GatewayConfig) -> dict[str, Confidence]:
    """The live confidence each configured policy's steps get, by policy name."""
    return {spec.name: CONFIDENCES[spec.live_confidence()] for spec in config.policies}


def _router_artifact(spec: PolicySpec, names: set[str]) -> QualityRouter:
    from llmtriage.policies.routers.artifacts import load

    assert spec.artifact is not None
    router = load(spec.artifact)
    missing = sorted(set(router.models_) - names)
    if missing:
        raise DataError(f"policy {spec.name!r}: the router {spec.artifact} routes to "
                        f"{missing}, which the catalog lacks")
    return router


def _fitted(spec: PolicySpec, names: set[str], catalog: Catalog) -> Policy:
    """A policy fitted on a recorded table, over the table's models that the catalog has."""
    from llmtriage.data.loaders import load_table

    assert spec.table is not None
    table = load_table(spec.table)
    wanted = spec.models or [m for m in catalog.names() if m in table.models]
    absent = [m for m in wanted if m not in table.models]
    if absent or not wanted:
        raise DataError(f"policy {spec.name!r}: the table {spec.table} has no outcomes for "
                        f"{absent or 'any catalog model'}; it has {list(table.models)}")
    table = table.select_models(wanted)
    if spec.kind == "bandit":
        from llmtriage.policies.routers.bandit import LinUCBRouter

        return LinUCBRouter(alpha=spec.alpha, lam=spec.lam or 0.0).fit(table)
    if not np.isfinite(table.confidence).any():
        raise DataError(f"policy {spec.name!r}: the table {spec.table} records no confidence "
                        "to calibrate (collect one with `triage collect`)")
    if spec.kind == "calibrated-cascade":
        from llmtriage.policies.cascades import CalibratedCascade

        return CalibratedCascade(wanted, 0.8 if spec.threshold is None else spec.threshold
                                 ).fit(table)
    from llmtriage.policies.cascades import CascadeRouter
    from llmtriage.policies.routers import ClassifierRouter, KNNRouter

    if spec.artifact is not None:
        router = _router_artifact(spec, names)
        if list(router.models_) != wanted:
            raise DataError(f"policy {spec.name!r}: the router {spec.artifact} predicts "
                            f"{list(router.models_)}, the table's models are {wanted}")
    else:
        router = KNNRouter() if spec.router == "knn" else ClassifierRouter()
    return CascadeRouter(router, lam=spec.lam or 0.0, max_calls=spec.max_calls).fit(table)
