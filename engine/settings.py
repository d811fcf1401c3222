"""One frozen settings object, read from the environment (``SEGENGINE_`` prefix) and CLI flags.

The embedded stack starts only when asked for: ``segengine dev``, the demo, the test
fixtures, and ``segengine run --embedded`` (``SEGENGINE_EMBEDDED=true``). ``run`` without a
broker or Redis configured, and not asked to embed them, stops with one line saying what to set.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .paths import SHIPPED_RULES, SHIPPED_TOPICS

MIN_PROCESSES, MAX_PROCESSES = 1, 64


class Settings(BaseSettings):
    # hide_input_in_errors: a rejected secret (a password given with the wrong protocol) stays out of tracebacks
    model_config = SettingsConfigDict(env_prefix="SEGENGINE_", frozen=True, extra="ignore", hide_input_in_errors=True)

    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]; unset = embedded broker")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how the broker is reached: SSL = over TLS, SASL_* = with a SASL login"
    )
    # validate_default: a SASL protocol without these, or a certfile without its key, is caught
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, validate_default=True, description="SASL_* only"
    )
    kafka_sasl_username: str | None = Field(None, validate_default=True, description="SASL_* only")
    kafka_sasl_password: SecretStr | None = Field(None, validate_default=True, description="SASL_* only")
    kafka_ssl_cafile: Path | None = Field(
        None, description="SSL / SASL_SSL: PEM of the CAs that signed the broker's certificate; unset = the system's"
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="SSL / SASL_SSL: PEM client certificate, for brokers that authenticate clients by TLS"
    )
    kafka_ssl_keyfile: Path | None = Field(
        None, validate_default=True, description="the unencrypted PEM private key of kafka_ssl_certfile"
    )
    redis_url: str | None = Field(
        None,
        description="redis://host:port/db (rediss:// TLS; redis+cluster://host:port a cluster); "
        "unset = embedded redis-server",
    )
    redis_buckets: int | None = Field(
        None,
        ge=1,
        le=16384,
        description="buckets the customers spread over, for a Redis with no engine data yet; "
        "unset = 1 on a single primary, 64 on a cluster",
    )
    group_id: str = "segengine"
    topics_file: Path = Field(SHIPPED_TOPICS, description="the topic declarations (default: the shipped topics.yaml)")
    rules_file: Path = Field(
        SHIPPED_RULES, description="a rules file, or a folder of rule packs (*.yaml); default: the shipped packs"
    )
    clock: Literal["wall", "event"] = Field(
        "wall", description="wall: now is the wall clock; event: now is the event-time watermark (replays)"
    )
    native: str = Field(
        "auto",
        description="the compiled core (`segengine native build`): auto = used when built from these sources, "
        "off, or a build's folder; read when the package is imported (segengine.native)",
    )
    batch_max_records: int = Field(2000, ge=1, description="records taken from Kafka per batch")
    gc_sweep_s: float = Field(
        600.0,
        ge=0,
        description="seconds between full garbage collections of a worker, whose objects are otherwise frozen "
        "out of collections after each batch (segengine.heap); 0 = never",
    )
    batch_timeout_ms: int = Field(5, ge=0, description="longest wait for a batch to fill once its first records are in")
    state_cache_customers: int = Field(
        50_000,
        ge=0,
        description="customers whose decoded state a worker keeps after writing it, checked against Redis on "
        "every use (0 = none; about 7 KB each with every shipped pack)",
    )
    rules_reload_s: float = Field(2.0, ge=0, description="how often to look for a changed rules file (0 = never)")
    reevaluate_batch: int = Field(200, ge=1, description="customers per re-evaluation step after a rules switch")
    reevaluate_pause_ms: int = Field(20, ge=0, description="pause between re-evaluation steps (throttle)")
    background_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="while events flow, the most of the worker's time that due timers and re-evaluations take "
        "(1 = turn about with event batches; lower favours event latency and leaves the rest idle)",
    )
    timers: bool = Field(True, description="run the due loop (time alone moves customers)")
    timer_interval_ms: int = Field(200, ge=10, description="how often a worker looks for due customers")
    timer_batch: int = Field(500, ge=1, description="due customers taken per partition and step")
    quantiles_refresh_s: float = Field(
        60.0, ge=0, description="how often population samples for quantile_score are renewed (0 = never)"
    )
    rescore_drift: float = Field(
        0.05,
        ge=0,
        description="re-score every customer when a population cut point moved by more than this share "
        "(0 = on every new sample)",
    )
    quantiles_sample: int = Field(10_000, ge=10, description="customers sampled for quantile_score / pct_rank")
    fetch_max_wait_ms: int = Field(
        20, ge=0, description="longest time the broker holds a fetch with no new data (latency when idle)"
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="consumer group session timeout: a worker silent this long is taken out of the group",
    )
    heartbeat_interval_ms: int = Field(
        3_000,
        ge=50,
        description="consumer group heartbeat: a member learns of a rebalance at its next one, "
        "so this bounds how long a join or leave takes",
    )
    rebalance_timeout_ms: int = Field(
        30_000, ge=1000, description="how long the group waits for members to rejoin during a rebalance"
    )
    group_instance_id: str | None = Field(
        None,
        min_length=1,
        description="static group membership: a stable name per worker (e.g. a StatefulSet pod's); a worker "
        "restarted under the same name within the session timeout takes its partitions back without a rebalance",
    )
    processes: int = Field(
        1,
        description="`run`: worker processes in this one consumer group, behind one HTTP API (1 = this process "
        "alone; more: a supervisor process and that many workers, at most 64)",
    )
    dedupe_horizon_days: float = Field(7.0, gt=0, description="an event_id repeated within this counts once")
    max_event_bytes: int = Field(1 << 20, ge=1024)
    future_skew_s: float = Field(300.0, ge=0, description="events further than this in the future go to the DLQ")
    http_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="port of the HTTP API (/customers, /segments, /healthz, /readyz, /metrics); 0 = do not serve",
    )
    http_host: str = Field("0.0.0.0", description="address the HTTP API listens on")
    http_socket_fd: int | None = Field(
        None,
        ge=3,
        description="serve the HTTP API on this inherited listening socket instead of binding http_port "
        "(set by `run --processes` for its worker processes)",
    )
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    api_token: SecretStr | None = Field(None, description="bearer token for /customers and /segments; unset = open")
    dependency_timeout_s: float = Field(
        60.0, ge=0, description="a worker that cannot reach Redis or the broker this long stops, exit 1 (0 = never)"
    )

    embedded: bool = Field(
        False,
        description="`run`: start the embedded broker and Redis for what is not configured "
        "(development only; never implied)",
    )

    @field_validator("processes")
    @classmethod
    def _processes_in_range(cls, processes: int) -> int:
        if not MIN_PROCESSES <= processes <= MAX_PROCESSES:
            raise PydanticCustomError(
                "processes",
                "the number of worker processes is from {low} to {high} (one per core is the most that helps), "
                "not {given}",
                {"low": MIN_PROCESSES, "high": MAX_PROCESSES, "given": processes},
            )
        return processes

    @field_validator("kafka_security_protocol")
    @classmethod
    def _secured_broker_is_given(cls, protocol: str, info: ValidationInfo) -> str:
        if protocol != "PLAINTEXT" and "kafka_bootstrap" in info.data and not info.data["kafka_bootstrap"]:
            raise PydanticCustomError(
                "kafka_security",
                "{protocol} needs SEGENGINE_KAFKA_BOOTSTRAP (the embedded broker speaks PLAINTEXT only)",
                {"protocol": protocol},
            )
        return protocol

    @field_validator("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
    @classmethod
    def _sasl_with_sasl_only(cls, value: str | SecretStr | None, info: ValidationInfo) -> str | SecretStr | None:
        protocol = info.data.get("kafka_security_protocol")
        if protocol is None:  # invalid itself: reported on its own line
            return value
        given = (value.get_secret_value() if isinstance(value, SecretStr) else value) not in (None, "")
        if protocol.startswith("SASL_") and not given:
            allowed = " (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" if info.field_name == "kafka_sasl_mechanism" else ""
            raise _kafka_security_error(f"SEGENGINE_KAFKA_SECURITY_PROTOCOL={protocol} needs {{var}}{allowed}", info)
        if value is not None and not protocol.startswith("SASL_"):
            raise _kafka_security_error(
                f"{{var}} is only used with SEGENGINE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL "
                f"(it is {protocol})",
                info,
            )
        return value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _tls_files(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        protocol = info.data.get("kafka_security_protocol")
        if path is not None and protocol is not None and protocol not in ("SSL", "SASL_SSL"):
            raise _kafka_security_error(
                f"{{var}} is only used with SEGENGINE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL (it is {protocol})", info
            )
        if path is not None and not path.is_file():
            raise PydanticCustomError(
                "kafka_security", "{path} is not a file" if path.exists() else "no file at {path}", {"path": str(path)}
            )
        if info.field_name == "kafka_ssl_keyfile" and "kafka_ssl_certfile" in info.data:
            certfile = info.data["kafka_ssl_certfile"]
            if certfile is not None and path is None:
                raise _kafka_security_error("SEGENGINE_KAFKA_SSL_CERTFILE needs {var} (its private key)", info)
            if certfile is None and path is not None:
                raise _kafka_security_error("{var} needs SEGENGINE_KAFKA_SSL_CERTFILE (its certificate)", info)
        return path

    def missing_connections(self) -> list[str]:
        """The connection variables a worker needs that are not set."""
        return [
            var
            for var, value in (
                ("SEGENGINE_KAFKA_BOOTSTRAP", self.kafka_bootstrap),
                ("SEGENGINE_REDIS_URL", self.redis_url),
            )
            if not value
        ]


ENV_PREFIX = "SEGENGINE_"
SECRET_FIELDS = frozenset({"api_token", "kafka_sasl_password"})


def _kafka_security_error(message: str, info: ValidationInfo) -> PydanticCustomError:
    """A Kafka security problem in one line; ``{var}`` stands for the variable of the field checked."""
    return PydanticCustomError("kafka_security", message, {"var": env_name(str(info.field_name))})


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``SEGENGINE_*`` variable that names no setting (a typo would otherwise be
    ignored in silence), with the closest known name."""
    known = sorted(env_name(f) for f in Settings.model_fields)
    lines = []
    for var in sorted(v for v in environ if v.startswith(ENV_PREFIX) and v not in known):
        close = difflib.get_close_matches(var, known, n=1, cutoff=0.75)
        lines.append(f"unknown setting {var}" + (f": did you mean {close[0]}?" if close else " (ignored)"))
    return lines


def settings_problems(exc: ValidationError, environ: Mapping[str, str]) -> list[str]:
    """One line per invalid setting, naming the variable and the value given (never a
    secret's) and what is allowed, instead of pydantic's field-level report."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        var = env_name(field)
        if var in environ:
            given = f"{var}={'***' if field in SECRET_FIELDS else repr(environ[var])}"
        else:
            given = f"setting {field!r}"
        lines.append(f"{given}: {error['msg']}")
    return lines
