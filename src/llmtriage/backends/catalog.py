"""The model catalog: which models exist, how to reach them, what they cost.

A TOML file validated by pydantic; with none, the built-in catalog of the three embedded
local models. Example::

    watts_per_core = 10.0        # energy estimate for local models: busy CPU seconds x this
    usd_per_kwh = 0.15           # what a local model's energy costs

    [[models]]
    name = "qwen-1.5b"
    backend = "llamacpp"
    local = "qwen2.5-coder-1.5b" # one of the embedded models, or: path = "/models/x.gguf"

    [[models]]
    name = "gpt-4o-mini"
    backend = "openai"
    endpoint = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"
    price_in = 0.15              # USD per million tokens
    price_out = 0.6

API keys come from the environment variable named by ``api_key_env`` (or ``api_key``, kept
as a secret that never prints).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from llmtriage.backends.zoo import LOCAL_MODELS
from llmtriage.data.errors import DataError, faults, repeated

#: Busy-core power assumed for the energy estimate of local inference (W). A desktop CPU
#: draws roughly 5-15 W per busy core; override with ``watts_per_core`` in the catalog.
WATTS_PER_CORE = 10.0
USD_PER_KWH = 0.15


#: The longest duration a catalog or config may set (past it a timer is a typo).
DAY_S = 86_400.0


#: The most characters a model or policy name has.
MAX_NAME = 200


def header_safe_name(name: str) -> str:
    """A model or policy name the gateway can send back: it goes into response headers
    (``x-triage-model``; HTTP allows no control characters there, and Starlette writes
    Latin-1) and into comma-separated lists (``x-triage-models-called``, ``--models``), so
    printable ASCII without spaces or commas. Raises ValueError saying so."""
    if not all("!" <= ch <= "~" and ch != "," for ch in name):
        raise ValueError(f"{name[:60]!r} is not a name the gateway can send back: use "
                         "printable ASCII without spaces or commas")
    return name


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=MAX_NAME)
    backend: Literal["llamacpp", "openai"]
    local: str | None = None
    path: Path | None = None
    endpoint: str | None = None
    #: The model name sent upstream, when it differs from ``name``.
    remote_name: str | None = None
    api_key_env: str | None = None
    api_key: SecretStr | None = None
    price_in: float = Field(0.0, ge=0)
    price_out: float = Field(0.0, ge=0)
    context_length: int = Field(2048, gt=0)
    energy_j_per_token: float | None = Field(None, ge=0)
    n_threads: int = Field(2, gt=0)
    max_concurrency: int = Field(1, gt=0)
    #: Calls that may wait for one of this model's slots; beyond, a call fails at once.
    max_queue: int = Field(64, ge=0)
    #: Whole-call deadline of one attempt (HTTP models), not a per-read timeout.
    timeout_s: float = Field(60.0, gt=0, le=DAY_S)
    #: Deadline for the reply's first byte (a stream's first chunk); default: timeout_s.
    first_byte_s: float | None = Field(None, gt=0, le=DAY_S)
    #: A call that succeeds but takes longer than this counts as a failure for the circuit
    #: breaker (latency outlier detection); None: only failures count.
    slow_call_s: float | None = Field(None, gt=0, le=DAY_S)
    max_retries: int = Field(3, ge=0, le=20)
    #: What a call is expected to take until calls are measured (ms; a request's deadline
    #: is kept against it, see policies.limits); None: unknown, taken to fit.
    expected_latency_ms: float | None = Field(None, gt=0)

    @field_validator("name")
    @classmethod
    def _sendable(cls, name: str) -> str:
        return header_safe_name(name)

    @model_validator(mode="after")
    def _where(self) -> ModelSpec:
        if self.backend == "llamacpp":
            if (self.local is None) == (self.path is None):
                raise ValueError("a llamacpp model needs exactly one of 'local' or 'path'")
            if self.local and self.local not in {m.name for m in LOCAL_MODELS}:
                raise ValueError(f"unknown local model {self.local!r}; choose among "
                                 f"{[m.name for m in LOCAL_MODELS]}")
        elif not self.endpoint:
            raise ValueError("an openai model needs an 'endpoint'")
        else:
            url = urlsplit(self.endpoint)
            if url.scheme not in ("http", "https") or not url.hostname:
                # Not echoed: an endpoint may carry credentials.
                raise ValueError("the endpoint must be an http:// or https:// URL with a host")
        return self

    def secret(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    watts_per_core: float = Field(WATTS_PER_CORE, gt=0)
    usd_per_kwh: float = Field(USD_PER_KWH, ge=0)
    models: list[ModelSpec]

    @model_validator(mode="after")
    def _unique(self) -> Catalog:
        names = [m.name for m in self.models]
        dup = repeated(names)
        if dup:
            raise ValueError(f"model names must be unique; repeated: {dup}")
        return self

    def spec(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise DataError(f"no model {name!r} in the catalog; it has {self.names()}")

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def unset_keys(self) -> dict[str, list[str]]:
        """Each ``api_key_env`` variable that is unset or empty here, with the models that
        name it: their calls would go without a key, and fail only when made."""
        unset: dict[str, list[str]] = {}
        for m in self.models:
            if m.api_key is None and m.api_key_env and not os.environ.get(m.api_key_env):
                unset.setdefault(m.api_key_env, []).append(m.name)
        return unset

    def select(self, names: list[str]) -> Catalog:
        if not names:
            raise DataError(f"no model named; the catalog has {self.names()}")
        if twice := repeated(names):
            raise DataError(f"model(s) {twice} named twice; name each model once")
        return self.model_copy(update={"models": [self.spec(n) for n in names]})


def default_catalog() -> Catalog:
    """The embedded ladder: SmolLM2-135M, Qwen2.5-Coder-0.5B, Qwen2.5-Coder-1.5B."""
    return Catalog(models=[
        ModelSpec(name=m.name, backend="llamacpp", local=m.name) for m in LOCAL_MODELS
    ])


def read_toml(path: Path, what: str) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))  # BOM or not
    except OSError as exc:
        raise DataError(f"{what} {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"{what} {path}: not UTF-8 text (TOML is UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{what} {path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses into nested arrays and tables
        raise DataError(f"{what} {path}: invalid TOML: arrays or tables nested too deeply "
                        "to read") from None


def load_catalog(path: str | Path | None) -> Catalog:
    if path is None:
        return default_catalog()
    path = Path(path)
    data = read_toml(path, "catalog")
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"catalog {path}: {faults(exc.errors())}") from None
