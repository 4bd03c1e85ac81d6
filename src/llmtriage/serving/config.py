"""The gateway's configuration: one TOML file holding the model catalog and the gateway.

A catalog file (``[[models]]``, see :mod:`llmtriage.backends.catalog`) plus, all optional::

    [gateway]
    max_in_flight = 64          # requests running at once
    max_queue = 256             # more waiting than this: 429 with Retry-After
    request_log = "requests.sqlite"   # "" turns the log off
    database_url = "postgresql://triage@db/triage"  # the log in PostgreSQL instead
    log_text = false            # store prompts and answers (needed to retrain routers)
    log_retention_days = 90     # older rows are removed (spend still counts); 0 keeps all
    sticky_sessions = true      # a conversation stays on the model that answered it
    stream = "accepted"         # or "first": stream the first model's answer as generated
    fallback = true             # a failing model is replaced by the next one
    breaker_failures = 5        # consecutive failures that open a model's circuit
    breaker_reset_s = 10        # how long it stays open before one probe call
    request_timeout_s = 300     # a request's whole deadline (504 after it)
    max_connections = 512       # open connections; more are closed on arrival
    header_timeout_s = 10       # a connection must send its request headers within this
    body_timeout_s = 30         # a request's body must arrive within this of its headers
    max_header_bytes = 65536    # request line and headers; more, or more headers, is a 431
    max_headers = 100
    metrics_public = false      # /metrics without a key (for a scraper)
    state_url = "redis://127.0.0.1:6379/0"  # shared by replicas; default: in memory

    [gateway.cache]             # the response cache (see serving.cache)
    enabled = true
    ttl_s = 600
    max_entries = 10000
    semantic = false            # also reuse answers to paraphrases (cosine >= threshold)
    threshold = 0.98            # measured: no false hit on the probe stream (edge.md)

    [[keys]]                    # no keys: no authentication (keep the gateway on loopback)
    name = "team-a"
    sha256 = "9f86d0..."        # `triage key` makes a key and prints this
    requests_per_minute = 600
    budget_usd = 20.0
    max_in_flight = 16          # this key's requests running at once

    [[policies]]                # none: "triage" (fitted) and "triage-cascade"
    name = "cheap-first"
    kind = "threshold-cascade"  # any kind `triage policies` lists
    ladder = ["small", "large"] # any other key is a parameter of that kind
    threshold = -0.5

    [[policies]]
    name = "measured"
    artifact = "cascade.npz"    # a policy saved by `triage fit`: served as it was measured
    max_latency_ms = 2000       # a request's deadline unless it sets its own (header
    max_cost_usd = 0.01         # x-triage-max-latency-ms / -cost-usd, or body "triage")

    [[policies]]
    name = "fitted-at-start"
    kind = "calibrated-cascade"
    table = "ladder.csv"        # fitted on this outcome table when the gateway starts
    models = ["small", "large"] # the models it may use (default: the table's in the catalog)

Keys are stored hashed: a client's bearer token is hashed with SHA-256 and compared with
these. Keys are random 32-byte tokens, so a fast hash is enough (no password stretching).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from llmtriage.backends.catalog import (
    DAY_S,
    MAX_NAME,
    Catalog,
    ModelSpec,
    default_catalog,
    header_safe_name,
    read_toml,
)
from llmtriage.data.errors import DataError, faults, repeated
from llmtriage.policies.base import Policy
from llmtriage.policies.limits import Limits
from llmtriage.serving.cache import CacheSettings
from llmtriage.serving.schemas import MAX_TOKENS

#: How a streamed request is answered: the accepted answer at the end, or the first model's
#: as it is generated. The config's ``stream`` and the ``x-triage-stream`` header take these.
StreamMode = Literal["accepted", "first"]
STREAM_MODES: tuple[str, ...] = get_args(StreamMode)

#: What every section of a config shares: no unknown keys, and no infinite or NaN number
#: (TOML spells both; a timer of ``inf`` seconds overflows the server's, an infinite price
#: makes every budget meaningless).
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
#: A config's durations: positive and at most a day, past which a timer is a typo.
Seconds = Annotated[float, Field(gt=0, le=DAY_S)]


def default_log_path() -> Path:
    root = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(root) / "llmtriage" / "requests.sqlite"


class GatewaySettings(BaseModel):
    model_config = STRICT

    max_in_flight: int = Field(64, gt=0)
    max_queue: int = Field(256, ge=0)
    max_body_bytes: int = Field(1 << 20, gt=0)
    request_log: Path | None = Field(default_factory=default_log_path)
    #: The request log in PostgreSQL instead (postgresql://user:password@host/db); one log
    #: for every replica.
    database_url: str | None = Field(None, pattern=r"^postgres(ql)?://")
    log_text: bool = False
    #: Rows older than this are removed (their spend still counts against budgets);
    #: 0 keeps every row.
    log_retention_days: float = Field(90.0, ge=0, le=36500)
    sticky_sessions: bool = True
    session_ttl_s: float = Field(3600.0, gt=0, le=30 * DAY_S)
    stream: StreamMode = "accepted"
    fallback: bool = True
    breaker_failures: int = Field(5, gt=0)
    breaker_reset_s: Seconds = 10.0
    max_tokens: int = Field(256, gt=0, le=MAX_TOKENS)
    #: On SIGTERM: stop accepting, finish in-flight requests for at most this long.
    shutdown_timeout_s: Seconds = 30.0
    #: A request's whole deadline, every model call of its policy included (then 504).
    request_timeout_s: Seconds = 300.0
    #: Connections held open at once; more are closed as they arrive.
    max_connections: int = Field(512, gt=0)
    #: A connection that has not sent a request's headers this long after opening (or
    #: after its last response) is closed: half-open connections cannot pile up.
    header_timeout_s: Seconds = 10.0
    #: A request's body must arrive within this long of its headers (else a 408 and the
    #: connection closes): trickled bodies cannot hold every connection.
    body_timeout_s: Seconds = 30.0
    #: A request line and headers longer than this, or more headers than ``max_headers``,
    #: get a 431 and the connection is closed (the HTTP parser holds them all until the
    #: last arrives).
    max_header_bytes: int = Field(65536, ge=1024)
    max_headers: int = Field(100, gt=0)
    #: Idle keep-alive connections are closed after this long.
    keep_alive_s: Seconds = 5.0
    #: Serve /metrics without a key (for a scraper) when keys are configured.
    metrics_public: bool = False
    #: Where replicas share keys' limits, sessions and feedback scores: a Redis URL
    #: (redis://, rediss://, unix://); none: this process's memory.
    state_url: str | None = Field(None, pattern=r"^(redis|rediss|unix)://")
    #: The response cache (``[gateway.cache]``, see serving.cache); off by default.
    cache: CacheSettings = Field(default_factory=CacheSettings)

    @model_validator(mode="after")
    def _log_off(self) -> GatewaySettings:
        if self.request_log is not None and str(self.request_log) in ("", "."):
            self.request_log = None
        if 0 < self.log_retention_days < 1:
            raise ValueError("log_retention_days is 0 (keep every row) or at least 1: "
                             "feedback and the rate window read recent rows")
        return self

    @property
    def log_retention_s(self) -> float | None:
        return self.log_retention_days * DAY_S if self.log_retention_days else None


class ClientKey(BaseModel):
    model_config = STRICT

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    requests_per_minute: float | None = Field(None, gt=0)
    budget_usd: float | None = Field(None, ge=0)
    #: Requests of this key running at once (None: only the gateway's own limit).
    max_in_flight: int | None = Field(None, gt=0)


class PolicySpec(BaseModel):
    """One served policy: a saved artifact, or a kind built (and fitted on ``table``) at
    start. Keys beyond these are the kind's parameters, checked by the registry."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=MAX_NAME)
    kind: str | None = Field(None, min_length=1, max_length=100)
    artifact: Path | None = None
    #: The outcome table a kind is fitted on (a load_table source).
    table: str | None = None
    #: The models it may use: the table is restricted to them; a cascade's default ladder.
    models: list[str] | None = None
    #: Limits of a request that names none (see policies.limits).
    max_latency_ms: float | None = Field(None, gt=0)
    max_cost_usd: float | None = Field(None, ge=0)

    def limits(self) -> Limits:
        return Limits(self.max_latency_ms, self.max_cost_usd)

    @field_validator("name")
    @classmethod
    def _sendable(cls, name: str) -> str:
        return header_safe_name(name)

    @field_validator("models")
    @classmethod
    def _once_each(cls, models: list[str] | None) -> list[str] | None:
        if models and (twice := repeated(models)):
            raise ValueError(f"{twice} named twice; name each model once")
        return models

    @model_validator(mode="after")
    def _needs(self) -> PolicySpec:
        if (self.kind is None) == (self.artifact is None):
            raise ValueError("give either 'kind' (built at start) or 'artifact' (a policy "
                             "saved by `triage fit`)")
        if self.artifact is not None and (self.table or self.params()):
            raise ValueError("an artifact is served as it was fitted: no 'table' or "
                             "parameters beside it")
        return self

    def params(self) -> dict[str, object]:
        return dict(self.model_extra or {})


class RaySettings(BaseModel):
    """How ``triage serve --ray`` lays the gateway out on a cluster (ignored without it)."""

    model_config = STRICT

    #: CPUs each gateway replica reserves.
    gateway_cpus: float = Field(0.5, gt=0)
    #: Each embedded model is its own deployment, each replica reserving the model's
    #: n_threads CPUs; Serve scales it between 1 and this many replicas on its queue.
    model_max_replicas: int = Field(2, ge=1, le=64)
    #: Calls waiting or running per model replica that Serve aims for when it scales.
    model_target_queue: float = Field(2.0, gt=0)
    #: Routers' query embeddings, batched across requests and gateway replicas by one
    #: embedder deployment: at most this many texts a batch, waiting at most this long.
    embed_batch: int = Field(16, ge=1, le=256)
    embed_wait_ms: float = Field(5.0, ge=0, le=1000)


class GatewayConfig(BaseModel):
    model_config = STRICT

    #: The embedded models' energy per busy core and the price of that energy (the
    #: catalog's defaults when unset).
    watts_per_core: float | None = Field(None, gt=0)
    usd_per_kwh: float | None = Field(None, ge=0)
    models: list[ModelSpec] | None = None
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    keys: list[ClientKey] = Field(default_factory=list)
    policies: list[PolicySpec] = Field(default_factory=list)
    ray: RaySettings = Field(default_factory=RaySettings)

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
        extra = {k: v for k, v in (("watts_per_core", self.watts_per_core),
                                   ("usd_per_kwh", self.usd_per_kwh)) if v is not None}
        models = self.models if self.models is not None else default_catalog().models
        return Catalog(models=models, **extra)


def load_gateway_config(path: str | Path | None) -> GatewayConfig:
    if path is None:
        return GatewayConfig()
    path = Path(path)
    try:
        config = GatewayConfig.model_validate(read_toml(path, "config"))
    except ValidationError as exc:
        raise DataError(f"config {path}: {faults(exc.errors())}") from None
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


def build_policies(config: GatewayConfig, catalog: Catalog) -> dict[str, Policy]:
    """The configured policies, loaded or built through the registry (and fitted on their
    table). By default: "triage", the policy fitted on the embedded ladder's recording
    (where the catalog has its models), and "triage-cascade", a threshold cascade over the
    catalog."""
    from llmtriage.policies.defaults import fitted_default

    if config.policies:
        return {spec.name: _policy(spec, catalog) for spec in config.policies}
    policies: dict[str, Policy] = {}
    fitted = fitted_default(catalog.names())  # loaded once, its models checked
    if fitted is not None:
        policies["triage"] = fitted
    cascade = PolicySpec(name="triage-cascade", kind="threshold-cascade")
    policies[cascade.name] = _policy(cascade, catalog)
    return policies


def _policy(spec: PolicySpec, catalog: Catalog) -> Policy:
    from llmtriage.policies import registry

    names = catalog.names()
    for model in spec.models or []:
        if model not in names:
            raise DataError(f"policy {spec.name!r}: no model {model!r} in the catalog; it "
                            f"has {sorted(names)}")
    if spec.artifact is not None:
        return _artifact(spec, set(names))
    assert spec.kind is not None
    if spec.table is None:
        if registry.get(spec.kind).cls.requires_fit:
            raise DataError(f"policy {spec.name!r}: a {spec.kind} policy is fitted: give "
                            "'table' (an outcome table) or an 'artifact' from `triage fit`")
        context = registry.Context(tuple(spec.models or names))
        try:
            return registry.build_one(spec.kind, context, _ladder_from_models(spec))
        except DataError as exc:
            raise DataError(f"policy {spec.name!r}: {exc}") from None
    return _fitted(spec, names)


def _ladder_from_models(spec: PolicySpec) -> dict[str, object]:
    """A cascade's ladder is its ``models``, in the order given, unless it names one."""
    from llmtriage.policies import registry

    params = spec.params()
    if spec.models and "ladder" in registry.parameters(str(spec.kind)):
        params.setdefault("ladder", list(spec.models))
    return params


def _artifact(spec: PolicySpec, names: set[str]) -> Policy:
    from llmtriage.policies.artifacts import load
    from llmtriage.policies.defaults import models_used

    assert spec.artifact is not None
    policy = load(spec.artifact)
    missing = sorted(models_used(policy) - names)
    if missing:
        raise DataError(f"policy {spec.name!r}: {spec.artifact} uses {missing}, which the "
                        "catalog lacks")
    return policy


def _fitted(spec: PolicySpec, names: list[str]) -> Policy:
    """A policy fitted on a recorded table, over the table's models that the catalog has."""
    from llmtriage.data.loaders import load_table
    from llmtriage.policies import registry

    assert spec.table is not None and spec.kind is not None
    table = load_table(spec.table)
    wanted = spec.models or [m for m in names if m in table.models]
    absent = [m for m in wanted if m not in table.models]
    if absent or not wanted:
        raise DataError(f"policy {spec.name!r}: the table {spec.table} has no outcomes for "
                        f"{absent or 'any catalog model'}; it has {list(table.models)}")
    table = table.select_models(wanted)
    try:
        policy = registry.build_one(spec.kind, registry.Context(table.models, table),
                                    _ladder_from_models(spec))
        return policy.fit(table)
    except DataError as exc:
        raise DataError(f"policy {spec.name!r}: {exc}") from None
