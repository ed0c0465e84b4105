"""The one configuration model of a deployment: ``lcha.yaml``, ``LCHA_*`` variables, CLI flags.

A topology names the zones, how many replicas run in each (min/max), the app they serve, the
load balancer's health checks and retries, the database members and the LLM providers.  The
same model feeds ``lcha up`` (local processes), ``lcha validate`` and ``lcha render k8s``.

Precedence: CLI flags > environment (``LCHA_UP__<FIELD>``, nested with ``__``) > file > defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from langchain_ha._usage import UsageError
from langchain_ha.deployment import AppEnvironment, ProviderEntry, ProviderKind

DEFAULT_APP = "langchain_ha.demo.support_bot:bot"
ZoneName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,19}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthChecks(_Strict):
    """The load balancer's active checks (the seed's target-group knobs)."""

    path: str = Field(default="/readyz", pattern=r"^/")
    interval_s: float = Field(default=1.0, gt=0, le=60)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    healthy_threshold: int = Field(default=2, ge=1, le=10)
    unhealthy_threshold: int = Field(default=2, ge=1, le=10)

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthChecks:
        if self.timeout_s > self.interval_s * 5:
            raise ValueError("timeout_s must be at most 5 times interval_s")
        return self


class AppProfileSpec(_Strict):
    """How ``lcha up`` warms the app and ``lcha drill`` loads and judges it
    (:mod:`langchain_ha.drills.profiles`)."""

    name: Literal["auto", "support-bot", "order-desk", "generic"] = "auto"
    input: Any = Field(default="Hello", description="generic: the /v1/invoke input sent")


class Balancer(_Strict):
    """The load balancer in front of the replicas (HAProxy or Caddy)."""

    kind: Literal["auto", "haproxy", "caddy"] = Field(default="auto", description=(
        "auto: HAProxy where it is installed (it retries a shed request on another replica), "
        "else Caddy; the LCHA_BALANCER environment variable overrides it"))
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")
    checks: HealthChecks = HealthChecks()
    retries: int = Field(default=0, ge=0, le=50, description=(
        "upstreams tried per request; 0: as many as fit in try_duration_s (empty slots and "
        "dead replicas fail fast on loopback)"))
    try_duration_s: float = Field(default=20.0, ge=0, le=300)
    try_interval_ms: int = Field(default=25, ge=5, le=5000)
    passive_max_fails: int = Field(default=1, ge=1)
    passive_fail_duration_s: float = Field(default=5.0, gt=0)
    tls: bool = Field(default=False, description=(
        "serve HTTPS with Caddy's internal CA (Caddy only; auto picks Caddy)"))
    header_timeout_s: float = Field(default=10.0, gt=0, le=300, description=(
        "a client has this long to send its request headers"))
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600, description=(
        "Caddy's read_timeout: how long reading a request may take (SECURITY.md says what "
        "Caddy leaves unbounded)"))
    idle_timeout_s: float = Field(default=120.0, gt=0, le=3600, description=(
        "an idle keep-alive connection is closed after this long"))
    max_header_bytes: int = Field(default=65536, ge=4096, le=1 << 20, description=(
        "larger request headers are answered 431"))


class Replicas(_Strict):
    """Replicas per zone and when the supervisor scales them."""

    per_zone: int = Field(default=1, ge=1)
    min_per_zone: int = Field(default=1, ge=1)
    max_per_zone: int = Field(default=3, ge=1)
    max_inflight: int = Field(default=256, ge=1)
    serving_nice: int = Field(default=5, ge=0, le=19, description=(
        "nice value of a ready replica: on a shared machine, request work yields the CPU to "
        "the balancer, the database, the supervisor and local clients"))
    scale_up_inflight: float = Field(default=8.0, gt=0,
                                     description="mean in-flight per replica that adds one")
    scale_down_inflight: float = Field(default=0.5, ge=0)
    liveness_failures: int = Field(default=3, ge=1,
                                   description="missed checks before a replica is replaced")
    drain_timeout_s: float = Field(default=30.0, gt=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\*?$")]] = Field(
        default_factory=list, description=(
            "environment variables (names, or prefixes ending in *) replicas take from lcha "
            "up's environment besides LCHA_* and the providers' api_key_env; no other "
            "variable of the parent reaches them"))

    @model_validator(mode="after")
    def _bounds(self) -> Replicas:
        if not self.min_per_zone <= self.per_zone <= self.max_per_zone:
            raise ValueError("need min_per_zone <= per_zone <= max_per_zone")
        if self.scale_down_inflight >= self.scale_up_inflight:
            raise ValueError("scale_down_inflight must be below scale_up_inflight")
        return self


class Database(_Strict):
    """The Patroni-managed PostgreSQL cluster (one member per zone, or none)."""

    enabled: bool = True
    members_per_zone: Literal[0, 1] = 1
    replication: Literal["async", "sync", "strict"] = "sync"
    dcs: Literal["raft", "etcd"] = "raft"
    etcd_endpoints: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _etcd(self) -> Database:
        if self.dcs == "etcd" and not self.etcd_endpoints:
            raise ValueError("dcs etcd needs etcd_endpoints (host:port of each etcd member)")
        return self


SIM_MODELS = {"openai": "sim-chat", "openai-compatible": "sim-chat", "anthropic": "sim-claude",
              "google": "gemini-2.5-flash"}
"""The model name a simulated provider of each kind is asked for (the simulator takes any)."""


class ProviderSpec(_Strict):
    """One LLM provider: simulated (started locally) or real (by kind, model, key from env)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    kind: ProviderKind = Field(default="openai", description=(
        "the API it speaks: openai, anthropic, google or openai-compatible (a simulator "
        "speaks all of them)"))
    model: str | None = Field(default=None, min_length=1, description=(
        "the model asked for (a simulated provider defaults to the simulator's name)"))
    simulated: bool = True
    base_url: str | None = Field(default=None, pattern=r"^https?://", description=(
        "the API's URL as the kind's LangChain client takes it; default: the kind's public "
        "endpoint (needed for openai-compatible)"))
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    timeout_s: float | None = Field(default=None, gt=0, description="its attempt timeout")
    context_window: int | None = Field(default=None, gt=0)
    accepts_prefill: bool = False
    latency_ms: float = Field(default=40.0, ge=0)
    jitter_ms: float = Field(default=20.0, ge=0)

    @model_validator(mode="after")
    def _real_needs_key(self) -> ProviderSpec:
        if self.simulated:
            return self
        missing = [f for f in ("api_key_env", "model") if not getattr(self, f)]
        if self.kind == "openai-compatible" and not self.base_url:
            missing.append("base_url")
        if missing:
            raise ValueError(f"a real {self.kind} provider (simulated: false) needs "
                             f"{' and '.join(missing)}")
        return self

    def entry(self, sim_url: str | None = None) -> ProviderEntry:
        """What a replica is told about this provider; ``sim_url`` is its simulator's root URL
        (the simulator speaks every kind, OpenAI's under ``/v1``)."""
        base_url = self.base_url
        if self.simulated:
            if sim_url is None:
                raise ValueError(f"provider {self.name}: a simulated provider needs its URL")
            root = sim_url.rstrip("/")
            base_url = root + "/v1" if self.kind in ("openai", "openai-compatible") else root
        return ProviderEntry(
            name=self.name, kind=self.kind, model=self.model or SIM_MODELS[self.kind],
            base_url=base_url, api_key_env=None if self.simulated else self.api_key_env,
            simulated=self.simulated, timeout_s=self.timeout_s,
            context_window=self.context_window, accepts_prefill=self.accepts_prefill)


def _default_providers() -> list[ProviderSpec]:
    return [ProviderSpec(name="primary"), ProviderSpec(name="secondary", kind="anthropic")]


class Topology(BaseSettings):
    """A whole deployment.  Unknown keys are errors (a typo must not be silently ignored)."""

    model_config = SettingsConfigDict(env_prefix="LCHA_UP__", env_nested_delimiter="__",
                                      extra="forbid")

    name: str = Field(default="lcha", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    zones: list[ZoneName] = Field(default_factory=lambda: ["az1", "az2", "az3"], min_length=1)
    mode: Literal["active-active", "active-passive"] = "active-active"
    active_zones: list[str] = Field(
        default_factory=list,
        description="active-passive: zones that take traffic (default: the first zone)")
    app: str = Field(default=DEFAULT_APP, pattern=r"^[\w.]+:[\w.]+$")
    profile: AppProfileSpec = AppProfileSpec()
    replicas: Replicas = Replicas()
    balancer: Balancer = Balancer()
    database: Database = Database()
    providers: list[ProviderSpec] = Field(default_factory=_default_providers, min_length=1)
    state_dir: Path = Path(".lcha")
    lab: bool = Field(default=False, description=(
        "Each zone in its own network namespace on an isolated bridge (Linux, root): zones "
        "can be cut off, slowed or made lossy (lcha fault)"))

    @field_validator("zones")
    @classmethod
    def _distinct(cls, zones: list[str]) -> list[str]:
        if len(set(zones)) != len(zones):
            raise ValueError("zones must be distinct")
        return zones

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        problems = []
        unknown = [z for z in self.active_zones if z not in self.zones]
        if unknown:
            problems.append(f"active_zones {unknown} are not in zones")
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            problems.append("provider names must be distinct")
        if self.app == DEFAULT_APP and len(self.providers) < 2:
            problems.append("the support bot needs two providers (primary, secondary)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init values) win over the environment, which wins over the file.
        return init_settings, env_settings, _FileSource(settings_cls)

    def app_environment(self, sim_url: Callable[[ProviderSpec], str], *,
                        db_writer: str | None = None,
                        db_reader: str | None = None) -> AppEnvironment:
        """What this deployment tells its app; ``sim_url`` says where a simulated provider
        answers (a local port, a Kubernetes Service).  The first simulator also serves the
        tool API and the embeddings."""
        sims = [p for p in self.providers if p.simulated]
        first = sim_url(sims[0]) if sims else None
        return AppEnvironment(
            providers=[p.entry(sim_url(p) if p.simulated else None) for p in self.providers],
            tools_url=first, embeddings_url=first, db_writer=db_writer, db_reader=db_reader)

    def is_active(self, zone: str) -> bool:
        """Whether ``zone``'s replicas take traffic while an active replica is healthy."""
        if self.mode == "active-active":
            return True
        return zone in (self.active_zones or self.zones[:1])


_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("lcha_topology_file")


class _FileSource(PydanticBaseSettingsSource):
    """The values read from ``lcha.yaml`` (set by :func:`load_topology`)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _FILE_VALUES.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get({}))


def format_errors(exc: ValidationError) -> list[str]:
    """One line per error: ``field.path: message``."""
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{path}: {msg}")
    return out


def read_file(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (a UsageError naming the problem otherwise)."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a mapping of settings")
    return data


def load_topology(path: Path | None = None, **flags: Any) -> Topology:
    """File values, then environment, then ``flags`` (those not None); every error at once."""
    values: dict[str, Any] = {}
    _merge(values, {k: v for k, v in flags.items() if v is not None})
    token = _FILE_VALUES.set(read_file(path) if path is not None else {})
    try:
        return Topology(**values)
    except ValidationError as exc:
        where = f"{path}: " if path is not None else ""
        lines = format_errors(exc)
        raise UsageError(f"{where}{len(lines)} error(s)\n  " + "\n  ".join(lines)) from None
    finally:
        _FILE_VALUES.reset(token)


def _merge(into: dict[str, Any], flags: dict[str, Any]) -> None:
    for key, value in flags.items():
        node = into
        *parents, leaf = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
