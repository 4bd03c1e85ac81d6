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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmtriage.backends.catalog import Catalog, ModelSpec, default_catalog, problems, read_toml
from llmtriage.data.errors import DataError
from llmtriage.policies.base import Policy
from llmtriage.policies.cascades.ladder import DEFAULT_THRESHOLD


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


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["cascade", "router", "bandit"]
    #: cascade: the ladder, in order (default: the catalog's order).
    models: list[str] | None = None
    threshold: float = DEFAULT_THRESHOLD
    #: router: a trained artifact (`triage train`); lam overrides the one it was saved with.
    artifact: Path | None = None
    lam: float | None = Field(None, ge=0)
    #: bandit: the outcome table its prior and feature map are fitted on (a load_table source).
    table: str | None = None
    alpha: float = Field(0.1, ge=0)

    @model_validator(mode="after")
    def _needs(self) -> PolicySpec:
        if self.kind == "router" and self.artifact is None:
            raise ValueError("a router policy needs 'artifact'")
        if self.kind == "bandit" and self.table is None:
            raise ValueError("a bandit policy needs 'table'")
        return self


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
            policies[spec.name] = ThresholdCascade(spec.models or catalog.names(),
                                                   threshold=spec.threshold)
        elif spec.kind == "router":
            from llmtriage.policies.routers.artifacts import load

            assert spec.artifact is not None
            router = load(spec.artifact)
            missing = sorted(set(router.models_) - names)
            if missing:
                raise DataError(f"policy {spec.name!r}: the router {spec.artifact} routes to "
                                f"{missing}, which the catalog lacks")
            policies[spec.name] = router if spec.lam is None else router.with_params(
                lam=spec.lam)
        else:
            from llmtriage.data.loaders import load_table
            from llmtriage.policies.routers.bandit import LinUCBRouter

            assert spec.table is not None
            table = load_table(spec.table)
            keep = [m for m in table.models if m in names]
            if not keep:
                raise DataError(f"policy {spec.name!r}: the table {spec.table} has none of "
                                f"the catalog's models ({table.models})")
            policies[spec.name] = LinUCBRouter(alpha=spec.alpha, lam=spec.lam or 0.0).fit(
                table.select_models(keep))
    return policies
