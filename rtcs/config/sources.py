"""Where settings come from: the schema, the file, environment and override layers.

Each layer writes typed values into one flat mapping (dotted key -> value)
that starts as the defaults; :func:`load` then builds the frozen
:class:`~rtcs.config.settings.Settings` and validates it. Text (environment,
CLI) is parsed by :func:`_parse_text`; typed values (TOML, Python) are checked
by :func:`_check_type`. Both name the key, or the variable it came from.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from rtcs.config import devsecret
from rtcs.config.settings import (
    DERIVED,
    REDACTED,
    SUPERVISORS,
    AuthSettings,
    BackendSettings,
    BreakerSettings,
    DemoSettings,
    HeartbeatSettings,
    LimitsSettings,
    LogSettings,
    MetricsSettings,
    RulesSettings,
    ServerSettings,
    SessionSettings,
    Settings,
    SupervisionSettings,
    SupervisorSettings,
    TracingSettings,
)
from rtcs.config.validation import validate
from rtcs.errors import ConfigError

__all__ = ["SCHEMA", "SECTIONS", "load", "override"]

_ENV_PREFIX = "RTCS_"
_ENV_SECRET_ALIAS = "RTCS_JWT_SECRET"


def load(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load the settings: defaults, then the TOML file, then env, then overrides.

    ``environ`` defaults to ``{}``: rtcs never reads the process environment by
    itself (the CLI passes ``os.environ``). Environment variables whose second
    word is not a section name (``RTCS_CONFIG``) are left alone; ``RTCS_JWT_SECRET``
    is an alias of ``RTCS_AUTH_SECRET``. ``overrides`` use dotted keys such as
    ``{"server.port": 0, "supervision.router.max_restarts": 9}``; string values
    are parsed like environment values.

    When ``rtcs.auth.permissions`` is importable, the ``rbac`` mapping is checked
    with ``Policy.from_mapping``.

    With an HS* algorithm, no secret and a loopback host, the development
    secret is read from ``auth.dev_secret_file`` (created there on first use);
    its default location comes from ``XDG_STATE_HOME`` or ``HOME`` in
    ``environ`` (see :func:`rtcs.config.devsecret.default_path`).

    Raises:
        ConfigError: a missing or unparsable file, an unknown section or key, a
            value of the wrong type or out of range, or an inconsistent
            combination (see docs/configuration.md).
    """
    values = _flatten(Settings())
    names: dict[str, str] = {}
    if path is not None:
        _apply_file(values, path)
    if environ:
        _apply_env(values, names, environ)
    env = dict(environ or {})
    return _build(values, names, overrides or {}, lambda: devsecret.default_path(env))


def override(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``settings`` with dotted keys replaced, validated like :func:`load`.

    The development secret is decided again (``settings.auth.dev_secret_file``
    already holds its path): a new host may not accept it.

    Raises:
        ConfigError: an unknown key or a bad value.
    """
    values = _flatten(settings)
    if settings.auth.using_dev_secret:
        values["auth.secret"] = ""
    return _build(values, {}, overrides, lambda: devsecret.default_path({}))


# --- the schema: dotted key -> kind ------------------------------------------------

#: The sections of the file (besides ``[rbac]`` and ``[plugins]``) and their classes.
SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "auth": AuthSettings,
    "limits": LimitsSettings,
    "session": SessionSettings,
    "heartbeat": HeartbeatSettings,
    "backend": BackendSettings,
    "breaker": BreakerSettings,
    "supervision": SupervisionSettings,
    "log": LogSettings,
    "metrics": MetricsSettings,
    "rules": RulesSettings,
    "tracing": TracingSettings,
    "demo": DemoSettings,
}


def _kinds_of(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    kinds: dict[str, type] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get(DERIVED):
            continue  # filled in by validation, never set by the user
        hint = hints[f.name]
        kinds[f.name] = tuple if typing.get_origin(hint) is tuple else hint
    return kinds


def _schema() -> dict[str, type]:
    schema: dict[str, type] = {}
    for section, cls in SECTIONS.items():
        if cls is SupervisionSettings:
            for sup in SUPERVISORS:
                for key, kind in _kinds_of(SupervisorSettings).items():
                    schema[f"{section}.{sup}.{key}"] = kind
        else:
            for key, kind in _kinds_of(cls).items():
                schema[f"{section}.{key}"] = kind
    schema["rbac"] = dict
    schema["plugins"] = dict
    return schema


#: Every dotted key and the type of its value.
SCHEMA = _schema()


def _flatten(settings: Settings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in SCHEMA:
        obj: Any = settings
        for part in key.split("."):
            obj = getattr(obj, part)
        values[key] = obj
    return values


# --- coercion ----------------------------------------------------------------------

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _parse_text(kind: type, text: str, name: str) -> Any:
    """Parse an environment (or CLI) string into ``kind``."""
    raw = text.strip()
    if kind is str:
        return text
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(name, text, "expected a boolean (true/false/1/0/yes/no)")
    if kind is int:
        try:
            return int(raw, 10)
        except ValueError:
            raise ConfigError(name, text, "expected an integer") from None
    if kind is float:
        try:
            number = float(raw)
        except ValueError:
            raise ConfigError(name, text, "expected a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(name, text, "expected a finite number")
        return number
    if kind is tuple:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    raise ConfigError(name, text, "cannot be set from a string")


def _check_type(kind: type, value: Any, name: str) -> Any:
    """Check a typed (TOML or Python) value against ``kind``; return it normalised."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(name, value, "expected a boolean")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(name, value, "expected an integer")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ConfigError(name, value, "expected a finite number")
            return number
        raise ConfigError(name, value, "expected a number")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(name, value, "expected a string")
    if kind is tuple:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(name, value, "expected a list of strings")
    if kind is dict:
        if isinstance(value, Mapping):
            return types.MappingProxyType(copy.deepcopy(dict(value)))
        raise ConfigError(name, value, "expected a table")
    raise ConfigError(name, value, "unsupported setting type")  # pragma: no cover


# --- the layers --------------------------------------------------------------------


def _apply_file(values: dict[str, Any], path: str | os.PathLike[str]) -> None:
    shown = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("config file", shown, exc.strerror or "cannot be read") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config file", shown, f"not valid TOML: {exc}") from None
    for section, body in document.items():
        if section == "rbac":
            # The file's [rbac] replaces the default policy entirely.
            values["rbac"] = _check_type(dict, body, "rbac")
            continue
        if section == "plugins":
            values["plugins"] = _check_type(dict, body, "plugins")
            continue
        if section not in SECTIONS:
            raise ConfigError(section, body, "unknown section")
        if not isinstance(body, dict):
            raise ConfigError(section, body, "expected a table")
        for key, value in body.items():
            dotted = f"{section}.{key}"
            if section == "supervision":
                if key not in SUPERVISORS:
                    raise ConfigError(dotted, value, "unknown supervisor")
                if not isinstance(value, dict):
                    raise ConfigError(dotted, value, "expected a table")
                for sub_key, sub_value in value.items():
                    _set(values, f"{dotted}.{sub_key}", sub_value, text=False)
            else:
                _set(values, dotted, value, text=False)


def _set(values: dict[str, Any], dotted: str, value: Any, *, text: bool, name: str = "") -> None:
    name = name or dotted
    kind = SCHEMA.get(dotted)
    if kind is None:
        raise ConfigError(name, value, "unknown setting")
    if text and isinstance(value, str) and kind is not dict:
        values[dotted] = _parse_text(kind, value, name)
    else:
        values[dotted] = _check_type(kind, value, name)


def _env_key(var: str) -> str | None:
    """Map ``RTCS_SERVER_PORT`` to ``server.port``; None when not a section."""
    section, _, rest = var[len(_ENV_PREFIX) :].lower().partition("_")
    if section not in SECTIONS and section not in ("rbac", "plugins"):
        return None
    if section == "supervision":
        sup, _, key = rest.partition("_")
        return f"{section}.{sup}.{key}"
    return f"{section}.{rest}"


def _apply_env(values: dict[str, Any], names: dict[str, str], environ: Mapping[str, str]) -> None:
    if _ENV_SECRET_ALIAS in environ:
        direct = environ.get("RTCS_AUTH_SECRET")
        if direct is not None and direct != environ[_ENV_SECRET_ALIAS]:
            raise ConfigError(_ENV_SECRET_ALIAS, REDACTED, "conflicts with RTCS_AUTH_SECRET")
        values["auth.secret"] = environ[_ENV_SECRET_ALIAS]
        names["auth.secret"] = _ENV_SECRET_ALIAS
    for var, text in environ.items():
        if not var.startswith(_ENV_PREFIX) or var == _ENV_SECRET_ALIAS:
            continue
        dotted = _env_key(var)
        if dotted is None:
            continue
        if dotted.split(".", 1)[0] in ("rbac", "plugins"):
            raise ConfigError(var, text, "this section can only be set in the configuration file")
        _set(values, dotted, text, text=True, name=var)
        names[dotted] = var


def _build(
    values: dict[str, Any],
    names: dict[str, str],
    overrides: Mapping[str, Any],
    dev_secret_file: Callable[[], str],
) -> Settings:
    values = dict(values)
    names = dict(names)
    for dotted, value in overrides.items():
        _set(values, dotted, value, text=True)
        names.pop(dotted, None)

    def section(name: str, cls: type) -> Any:
        return cls(
            **{key.split(".", 1)[1]: v for key, v in values.items() if key.startswith(f"{name}.")}
        )

    supervision = SupervisionSettings(
        **{
            sup: SupervisorSettings(
                strategy=values[f"supervision.{sup}.strategy"],
                max_restarts=values[f"supervision.{sup}.max_restarts"],
                within=values[f"supervision.{sup}.within"],
            )
            for sup in SUPERVISORS
        }
    )
    settings = Settings(
        server=section("server", ServerSettings),
        auth=section("auth", AuthSettings),
        limits=section("limits", LimitsSettings),
        session=section("session", SessionSettings),
        heartbeat=section("heartbeat", HeartbeatSettings),
        backend=section("backend", BackendSettings),
        breaker=section("breaker", BreakerSettings),
        supervision=supervision,
        log=dataclasses.replace(section("log", LogSettings), level=values["log.level"].lower()),
        metrics=section("metrics", MetricsSettings),
        rules=section("rules", RulesSettings),
        tracing=section("tracing", TracingSettings),
        demo=section("demo", DemoSettings),
        rbac=values["rbac"],
        plugins=values["plugins"],
    )
    return validate(settings, lambda dotted: names.get(dotted, dotted), dev_secret_file)
