"""Typed settings, in one place, from defaults < a TOML file < environment variables.

Every section is a frozen dataclass. A field ``bootstrap`` of section ``kafka`` is read from
``[kafka] bootstrap = ...`` in the file named by ``--config`` / ``$BACKSTOP_CONFIG`` and is
overridden by ``$BACKSTOP_KAFKA_BOOTSTRAP``. Values from the environment are converted to the
field's declared type; a value that does not convert is a ``UserError`` naming the variable.
Secrets (``*_password``) may also come from a file: ``$BACKSTOP_..._FILE``. They are left out of
every ``repr`` (a settings object in a log line or a traceback shows no password), and ``redact``
takes the password out of a URL before it goes into an error message.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.arguments import MAX_RATIO
from pipelines.errors import UserError

if TYPE_CHECKING:
    from pipelines.engine.engine import EngineParams

ENV_PREFIX = "BACKSTOP_"


@dataclasses.dataclass(frozen=True)
class KafkaSettings:
    """Where the broker is and how to talk to it.

    ``security_protocol`` and the ``sasl_*`` / ``ssl_*`` fields are passed through unchanged to
    every client the project makes (all confluent-kafka).
    """

    bootstrap: str = "127.0.0.1:9092"
    client_id: str = "backstop"
    topic_prefix: str = ""
    replication_factor: int = 1
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = dataclasses.field(default="", repr=False)
    ssl_cafile: str = ""

    def confluent_config(self) -> dict[str, str]:
        """librdkafka properties for confluent-kafka clients."""
        conf = {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password
        if self.ssl_cafile:
            conf["ssl.ca.location"] = self.ssl_cafile
        return conf


@dataclasses.dataclass(frozen=True)
class SchemaRegistrySettings:
    """A Confluent-compatible registry URL; empty means the embedded registry built from schemas/."""

    url: str = ""


@dataclasses.dataclass(frozen=True)
class ClickHouseSettings:
    """The audit store: a ClickHouse server URL, or else the embedded chdb store at ``store``."""

    url: str = ""
    store: str = ".backstop/audit-store"
    user: str = "default"
    password: str = dataclasses.field(default="", repr=False)
    database: str = "backstop"


@dataclasses.dataclass(frozen=True)
class OpsSettings:
    """Observability of the long-running processes (stream worker, executor, audit sink).

    ``metrics_port`` 0 leaves the HTTP endpoint (``/metrics``, ``/healthz``, ``/readyz``) off, so
    two processes on one host never fight over a port nobody asked for. ``metrics_host`` is
    loopback by default: exposing it is a deployment decision (``0.0.0.0`` in a container).
    ``log_format`` is ``text`` or ``json`` (one JSON object a line, for a log shipper).
    ``lag_interval_s`` is how often consumer lag is recomputed from the cached watermarks.
    """

    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    log_format: str = "text"
    lag_interval_s: float = 5.0


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """The risk thresholds a stream worker's engine runs at (``backstop backtest --calibrate``
    writes this section). A key left out keeps the engine's default (``DetectorParams``,
    ``LadderParams``). Ratios are maintenance margin / equity: the margin breach fires at
    ``margin_trigger_ratio`` and clears below ``margin_clear_ratio``; ``liquidation_ratio`` is
    immediate full liquidation; the ladder calls at ``call_ratio``, reduces at ``reduce_ratio`` and
    releases below ``release_ratio``. A value outside (0, ``MAX_RATIO``] is refused when the
    settings are built, levels out of order (clear < trigger <= liquidation, release < call <= reduce,
    unset keys at their defaults) by ``engine_params``: a ``UserError`` naming the keys.
    """

    margin_trigger_ratio: float | None = None
    margin_clear_ratio: float | None = None
    liquidation_ratio: float | None = None
    call_ratio: float | None = None
    reduce_ratio: float | None = None
    release_ratio: float | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and not (math.isfinite(value) and 0 < value <= MAX_RATIO):
                raise UserError(f"[engine] {field.name}: expected a ratio above 0 and at most {MAX_RATIO:g}, "
                                f"got {value!r}")

    def engine_params(self, hedged_accounts: frozenset[str] = frozenset()) -> EngineParams:
        """The engine's parameters: its defaults, with the keys set here replaced."""
        from pipelines.detect.detectors import DetectorParams
        from pipelines.engine.engine import EngineParams
        from pipelines.policy.ladder import LadderParams

        detectors = _replace_set(DetectorParams(), self, ("margin_trigger_ratio", "margin_clear_ratio",
                                                          "liquidation_ratio"))
        ladder = _replace_set(LadderParams(), self, ("call_ratio", "reduce_ratio", "release_ratio"))
        _check_order("margin_clear_ratio", detectors.margin_clear_ratio, "margin_trigger_ratio",
                     detectors.margin_trigger_ratio, strict=True)
        _check_order("margin_trigger_ratio", detectors.margin_trigger_ratio, "liquidation_ratio",
                     detectors.liquidation_ratio, strict=False)
        _check_order("release_ratio", ladder.release_ratio, "call_ratio", ladder.call_ratio, strict=True)
        _check_order("call_ratio", ladder.call_ratio, "reduce_ratio", ladder.reduce_ratio, strict=False)
        return EngineParams(detectors=detectors, ladder=ladder, hedged_accounts=hedged_accounts)


def _replace_set(params: Any, settings: EngineSettings, names: tuple[str, ...]) -> Any:
    """``params`` with the fields ``names`` that ``settings`` sets."""
    values = {name: getattr(settings, name) for name in names if getattr(settings, name) is not None}
    return dataclasses.replace(params, **values)


def _check_order(low_name: str, low: float, high_name: str, high: float, *, strict: bool) -> None:
    if low > high or (strict and low == high):
        relation = "below" if strict else "at most"
        raise UserError(f"[engine] {low_name} ({low:g}) must be {relation} {high_name} ({high:g})")


@dataclasses.dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = dataclasses.field(default_factory=KafkaSettings)
    schema_registry: SchemaRegistrySettings = dataclasses.field(default_factory=SchemaRegistrySettings)
    clickhouse: ClickHouseSettings = dataclasses.field(default_factory=ClickHouseSettings)
    ops: OpsSettings = dataclasses.field(default_factory=OpsSettings)
    engine: EngineSettings = dataclasses.field(default_factory=EngineSettings)


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages a person reads)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None:
        return url
    host = parsed.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{parsed.username}:***@{host}"))


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from the optional TOML file and the environment."""
    env = os.environ if env is None else env
    path = path or env.get(f"{ENV_PREFIX}CONFIG") or None
    file_values: dict[str, Any] = {}
    if path:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    sections = {}
    for section in dataclasses.fields(Settings):
        section_type = typing.get_type_hints(Settings)[section.name]
        from_file = file_values.get(section.name, {})
        unknown = set(from_file) - {f.name for f in dataclasses.fields(section_type)}
        if unknown:
            raise UserError(f"config file {path}: unknown key(s) in [{section.name}]: {', '.join(sorted(unknown))}")
        sections[section.name] = _load_section(section.name, section_type, from_file, env)
    unknown_sections = set(file_values) - set(sections)
    if unknown_sections:
        raise UserError(f"config file {path}: unknown section(s): {', '.join(sorted(unknown_sections))}")
    return Settings(**sections)


def _load_section(name: str, cls: type, from_file: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        var = f"{ENV_PREFIX}{name}_{field.name}".upper()
        if var in env:
            values[field.name] = _convert(var, env[var], hints[field.name])
        elif f"{var}_FILE" in env:
            values[field.name] = _read_secret_file(f"{var}_FILE", env[f"{var}_FILE"])
        elif field.name in from_file:
            values[field.name] = _convert(f"[{name}] {field.name}", from_file[field.name], hints[field.name])
    return cls(**values)


def _read_secret_file(var: str, path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise UserError(f"{var}: cannot read secret file {path}: {exc.strerror}") from None


def _convert(where: str, raw: Any, target: Any) -> Any:
    """``raw`` as ``target`` (bool, int, float, str, or one of them ``| None``: a value given is never None).
    A TOML boolean is no number: refused for an int or a float."""
    if typing.get_origin(target) in (typing.Union, types.UnionType):
        target = next(t for t in typing.get_args(target) if t is not type(None))
    try:
        if target is bool:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if target in (int, float) and isinstance(raw, bool):
            raise ValueError(raw)
        if target in (int, float, str):
            return target(raw)
    except (TypeError, ValueError):
        raise UserError(f"{where}: cannot read {raw!r} as {target.__name__}") from None
    raise UserError(f"{where}: unsupported setting type {target}")
