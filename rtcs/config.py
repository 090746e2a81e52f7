"""The rtcs configuration: one typed, frozen ``Settings`` object, loaded once.

Precedence, lowest first (docs/configuration.md is the reference):

1. built-in defaults (the dataclass defaults below, mirrored by ``conf/rtcs.toml``);
2. the TOML file given to :func:`load`;
3. environment variables ``RTCS_<SECTION>_<KEY>`` (``RTCS_SERVER_PORT=9000``),
   plus ``RTCS_SUPERVISION_<NAME>_<KEY>`` and the alias ``RTCS_JWT_SECRET``;
4. explicit overrides with dotted keys (``{"server.port": 0}``), from the CLI.

Every bad value raises :class:`~rtcs.errors.ConfigError` naming the key (the
dotted key, or the environment variable it came from) and the value. Unknown
sections and keys in the file are errors, so a typo never passes silently.

This module does no I/O besides reading the TOML file and checking that the
configured key and certificate files are readable; it never reads
``os.environ`` itself: the caller passes the environment in.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rtcs.errors import ConfigError

__all__ = [
    "DEV_SECRET",
    "AuthSettings",
    "BackendSettings",
    "HeartbeatSettings",
    "LimitsSettings",
    "LogSettings",
    "MetricsSettings",
    "ServerSettings",
    "SessionSettings",
    "Settings",
    "SupervisionSettings",
    "SupervisorSettings",
    "is_loopback",
    "load",
]

#: The HS256 secret used when none is configured and the server only listens on
#: a loopback address. Anyone can mint tokens with it: development only.
DEV_SECRET = "rtcs-insecure-development-secret"

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256"})
ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS

# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
_HMAC_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

STRATEGIES = frozenset({"one_for_one", "all_for_one", "rest_for_one"})
LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})
LOG_FORMATS = frozenset({"json", "console"})
BACKEND_KINDS = frozenset({"memory"})

_ENV_PREFIX = "RTCS_"
_ENV_SECRET_ALIAS = "RTCS_JWT_SECRET"
_REDACTED = "***"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``[server]``: where rtcs listens and how it shuts down."""

    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/ws"
    workers: int = 1
    node_id: str = ""  # empty: the app generates "<hostname>-<pid>" at start
    drain_timeout: float = 10.0
    tls_cert: str = ""
    tls_key: str = ""
    allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """``[auth]``: how tokens are verified and where they may come from.

    ``secret`` holds the effective secret: :data:`DEV_SECRET` when none was
    configured on a loopback host (then :attr:`using_dev_secret` is true).
    """

    algorithms: tuple[str, ...] = ("HS256",)
    secret: str = field(default="", repr=False)
    public_key_file: str = ""
    jwks_file: str = ""
    private_key_file: str = ""
    audience: str = ""
    issuer: str = ""
    leeway: float = 0.0
    cookie_name: str = "rtcs_token"
    allow_query_token: bool = True
    auth_timeout: float = 5.0
    max_token_bytes: int = 8192
    dev_secret_on_loopback: bool = True

    @property
    def using_dev_secret(self) -> bool:
        """True when tokens are checked with the public :data:`DEV_SECRET`."""
        return self.secret == DEV_SECRET

    @property
    def uses_hmac(self) -> bool:
        """True when the pinned algorithms are HS* (a shared secret)."""
        return bool(HMAC_ALGORITHMS.intersection(self.algorithms))


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """``[limits]``: per-connection and per-node limits (PROTOCOL.md, "Limits")."""

    max_message_size: int = 65536
    outbox_bytes: int = 1048576
    rate: float = 100.0
    burst: int = 200
    rate_limit_close_after: int = 100
    rate_limit_window: float = 10.0
    max_subscriptions: int = 256
    max_rooms: int = 256
    max_connections_per_address: int = 1000
    max_connections_per_user: int = 100
    max_connections_per_node: int = 50000
    max_json_depth: int = 32
    fanout_chunk: int = 1000
    inbound_queue: int = 128


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """``[session]``: how long a dropped session stays resumable, and its buffer."""

    ttl: float = 120.0
    replay_buffer: int = 1000


@dataclass(frozen=True, slots=True)
class HeartbeatSettings:
    """``[heartbeat]``: ping interval and timeout, and when a connection is idle."""

    interval: float = 25.0
    timeout: float = 20.0
    idle_after: float = 60.0


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """``[backend]``: where brokers, sessions and presence live."""

    kind: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """One supervisor's restart policy; the runtime converts the strategy name."""

    strategy: str = "one_for_one"
    max_restarts: int = 3
    within: float = 5.0


@dataclass(frozen=True, slots=True)
class SupervisionSettings:
    """``[supervision.<name>]``: the restart policy of each supervisor."""

    system: SupervisorSettings = SupervisorSettings("one_for_one", 3, 5.0)
    server: SupervisorSettings = SupervisorSettings("rest_for_one", 3, 5.0)
    # Connection actors are temporary anyway: restarts are cheap and frequent.
    connections: SupervisorSettings = SupervisorSettings("one_for_one", 100, 1.0)
    router: SupervisorSettings = SupervisorSettings("all_for_one", 5, 10.0)
    metrics: SupervisorSettings = SupervisorSettings("all_for_one", 5, 10.0)
    # Plugins crash independently of each other and of rtcs's own actors.
    plugins: SupervisorSettings = SupervisorSettings("one_for_one", 5, 30.0)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """``[log]``: level and output format."""

    level: str = "info"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics]``: the Prometheus endpoint."""

    enabled: bool = True
    path: str = "/metrics"


def _default_rbac() -> Mapping[str, Any]:
    from rtcs.auth.permissions import DEFAULT_RBAC

    return types.MappingProxyType(copy.deepcopy(dict(DEFAULT_RBAC)))


@dataclass(frozen=True, slots=True)
class Settings:
    """Every rtcs setting. Build it with :func:`load`; never mutate it."""

    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    session: SessionSettings = SessionSettings()
    heartbeat: HeartbeatSettings = HeartbeatSettings()
    backend: BackendSettings = BackendSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    # A plain mapping (role name -> rules) validated by rtcs.auth.permissions.
    rbac: Mapping[str, Any] = field(default_factory=_default_rbac)
    # Plugin actors: name -> "package.module:ActorClass", or a table with
    # ``actor`` and the plugin's own options (see rtcs.plugins).
    plugins: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))

    def with_overrides(
        self, overrides: Mapping[str, Any] | None = None, /, **dotted: Any
    ) -> Settings:
        """Return a copy with dotted keys replaced, validated like :func:`load`.

        ``settings.with_overrides({"server.port": 0})`` or
        ``settings.with_overrides(**{"log.level": "debug"})``.

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        merged = {**(overrides or {}), **dotted}
        return _build(_flatten(self), {}, merged)

    def as_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """Return the settings as nested plain dicts, lists and scalars.

        With ``redact=True`` a non-empty ``auth.secret`` is replaced by ``"***"``
        (use it before logging the effective configuration).
        """
        out: dict[str, Any] = {}
        for name, _kind in _SECTIONS.items():
            section = getattr(self, name)
            if name == "supervision":
                out[name] = {
                    sup: _plain(dataclasses.asdict(getattr(section, sup))) for sup in _SUPERVISORS
                }
            else:
                out[name] = _plain(dataclasses.asdict(section))
        out["rbac"] = copy.deepcopy(dict(self.rbac))
        out["plugins"] = dict(self.plugins)
        if redact and out["auth"]["secret"]:
            out["auth"]["secret"] = _REDACTED
        return out


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
    return _build(values, names, overrides or {})


# --- the schema: dotted key -> kind ------------------------------------------------

_SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "auth": AuthSettings,
    "limits": LimitsSettings,
    "session": SessionSettings,
    "heartbeat": HeartbeatSettings,
    "backend": BackendSettings,
    "supervision": SupervisionSettings,
    "log": LogSettings,
    "metrics": MetricsSettings,
}
_SUPERVISORS = tuple(f.name for f in dataclasses.fields(SupervisionSettings))


def _kinds_of(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    kinds: dict[str, type] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kinds[f.name] = tuple if typing.get_origin(hint) is tuple else hint
    return kinds


def _schema() -> dict[str, type]:
    schema: dict[str, type] = {}
    for section, cls in _SECTIONS.items():
        if cls is SupervisionSettings:
            for sup in _SUPERVISORS:
                for key, kind in _kinds_of(SupervisorSettings).items():
                    schema[f"{section}.{sup}.{key}"] = kind
        else:
            for key, kind in _kinds_of(cls).items():
                schema[f"{section}.{key}"] = kind
    schema["rbac"] = dict
    schema["plugins"] = dict
    return schema


_SCHEMA = _schema()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _flatten(settings: Settings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in _SCHEMA:
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
        if section not in _SECTIONS:
            raise ConfigError(section, body, "unknown section")
        if not isinstance(body, dict):
            raise ConfigError(section, body, "expected a table")
        for key, value in body.items():
            dotted = f"{section}.{key}"
            if section == "supervision":
                if key not in _SUPERVISORS:
                    raise ConfigError(dotted, value, "unknown supervisor")
                if not isinstance(value, dict):
                    raise ConfigError(dotted, value, "expected a table")
                for sub_key, sub_value in value.items():
                    _set(values, f"{dotted}.{sub_key}", sub_value, text=False)
            else:
                _set(values, dotted, value, text=False)


def _set(values: dict[str, Any], dotted: str, value: Any, *, text: bool, name: str = "") -> None:
    name = name or dotted
    kind = _SCHEMA.get(dotted)
    if kind is None:
        raise ConfigError(name, value, "unknown setting")
    if text and isinstance(value, str) and kind is not dict:
        values[dotted] = _parse_text(kind, value, name)
    else:
        values[dotted] = _check_type(kind, value, name)


def _env_key(var: str) -> str | None:
    """Map ``RTCS_SERVER_PORT`` to ``server.port``; None when not a section."""
    section, _, rest = var[len(_ENV_PREFIX) :].lower().partition("_")
    if section not in _SECTIONS and section not in ("rbac", "plugins"):
        return None
    if section == "supervision":
        sup, _, key = rest.partition("_")
        return f"{section}.{sup}.{key}"
    return f"{section}.{rest}"


def _apply_env(values: dict[str, Any], names: dict[str, str], environ: Mapping[str, str]) -> None:
    if _ENV_SECRET_ALIAS in environ:
        direct = environ.get("RTCS_AUTH_SECRET")
        if direct is not None and direct != environ[_ENV_SECRET_ALIAS]:
            raise ConfigError(_ENV_SECRET_ALIAS, _REDACTED, "conflicts with RTCS_AUTH_SECRET")
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


def _build(values: dict[str, Any], names: dict[str, str], overrides: Mapping[str, Any]) -> Settings:
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
            for sup in _SUPERVISORS
        }
    )
    settings = Settings(
        server=section("server", ServerSettings),
        auth=section("auth", AuthSettings),
        limits=section("limits", LimitsSettings),
        session=section("session", SessionSettings),
        heartbeat=section("heartbeat", HeartbeatSettings),
        backend=section("backend", BackendSettings),
        supervision=supervision,
        log=dataclasses.replace(section("log", LogSettings), level=values["log.level"].lower()),
        metrics=section("metrics", MetricsSettings),
        rbac=values["rbac"],
        plugins=values["plugins"],
    )
    return _validate(settings, lambda dotted: names.get(dotted, dotted))


# --- validation --------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (brackets allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _validate(s: Settings, name: Callable[[str], str]) -> Settings:
    def fail(dotted: str, value: object, reason: str) -> typing.NoReturn:
        raise ConfigError(name(dotted), value, reason)

    def positive(dotted: str, value: float) -> None:
        if value <= 0:
            fail(dotted, value, "must be greater than 0")

    def non_negative(dotted: str, value: float) -> None:
        if value < 0:
            fail(dotted, value, "must not be negative")

    def readable(dotted: str, value: str) -> None:
        if not os.path.isfile(value) or not os.access(value, os.R_OK):
            fail(dotted, value, "file does not exist or is not readable")

    def url_path(dotted: str, value: str) -> None:
        if not value.startswith("/") or any(c in value for c in "?# "):
            fail(dotted, value, "must be a path starting with '/'")

    server = s.server
    if not server.host:
        fail("server.host", server.host, "must not be empty")
    if not 0 <= server.port <= 65535:
        fail("server.port", server.port, "must be between 0 and 65535")
    url_path("server.path", server.path)
    positive("server.workers", server.workers)
    non_negative("server.drain_timeout", server.drain_timeout)
    if bool(server.tls_cert) != bool(server.tls_key):
        missing = "server.tls_key" if server.tls_cert else "server.tls_cert"
        fail(missing, "", "tls_cert and tls_key must be set together")
    for key in ("tls_cert", "tls_key"):
        if getattr(server, key):
            readable(f"server.{key}", getattr(server, key))
    for origin in server.allowed_origins:
        parts = urllib.parse.urlsplit(origin)
        try:
            parts.port  # noqa: B018 -- raises ValueError for a bad port
        except ValueError:
            fail("server.allowed_origins", origin, "bad port")
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            fail("server.allowed_origins", origin, "expected an origin like https://app.example")

    s = dataclasses.replace(s, auth=_validate_auth(s.auth, server.host, fail, positive, readable))

    limits = s.limits
    for f in dataclasses.fields(limits):
        positive(f"limits.{f.name}", getattr(limits, f.name))

    positive("session.ttl", s.session.ttl)
    non_negative("session.replay_buffer", s.session.replay_buffer)
    for key in ("interval", "timeout", "idle_after"):
        positive(f"heartbeat.{key}", getattr(s.heartbeat, key))

    if s.backend.kind == "redis":
        fail("backend.kind", s.backend.kind, "the Redis backend is not available yet; use memory")
    if s.backend.kind not in BACKEND_KINDS:
        fail("backend.kind", s.backend.kind, f"expected one of {sorted(BACKEND_KINDS)}")
    if urllib.parse.urlsplit(s.backend.redis_url).scheme not in ("redis", "rediss", "unix"):
        fail(
            "backend.redis_url",
            s.backend.redis_url,
            "expected a redis://, rediss:// or unix:// URL",
        )

    for sup in _SUPERVISORS:
        policy: SupervisorSettings = getattr(s.supervision, sup)
        if policy.strategy not in STRATEGIES:
            fail(
                f"supervision.{sup}.strategy",
                policy.strategy,
                f"expected one of {sorted(STRATEGIES)}",
            )
        non_negative(f"supervision.{sup}.max_restarts", policy.max_restarts)
        positive(f"supervision.{sup}.within", policy.within)

    if s.log.level not in LOG_LEVELS:
        fail("log.level", s.log.level, f"expected one of {sorted(LOG_LEVELS)}")
    if s.log.format not in LOG_FORMATS:
        fail("log.format", s.log.format, f"expected one of {sorted(LOG_FORMATS)}")

    url_path("metrics.path", s.metrics.path)
    if s.metrics.enabled and s.metrics.path == server.path:
        fail("metrics.path", s.metrics.path, "must differ from server.path")

    _validate_rbac(s.rbac)
    for plugin, entry in s.plugins.items():
        target = entry.get("actor") if isinstance(entry, Mapping) else entry
        if not isinstance(target, str) or ":" not in target:
            key = f"plugins.{plugin}.actor" if isinstance(entry, Mapping) else f"plugins.{plugin}"
            fail(key, target, "expected 'package.module:ActorClass'")
    return s


def _validate_auth(
    auth: AuthSettings,
    host: str,
    fail: Callable[[str, object, str], typing.NoReturn],
    positive: Callable[[str, float], None],
    readable: Callable[[str, str], None],
) -> AuthSettings:
    """Check the auth section; return it with the effective secret filled in."""
    if not auth.algorithms:
        fail("auth.algorithms", list(auth.algorithms), "must name at least one algorithm")
    for alg in auth.algorithms:
        if alg not in ALGORITHMS:
            fail("auth.algorithms", alg, f"expected one of {sorted(ALGORITHMS)}")
    hmac = [a for a in auth.algorithms if a in HMAC_ALGORITHMS]
    if hmac and len(hmac) != len(auth.algorithms):
        # One key interpreted both as an HMAC secret and as a public key is the
        # classic key-confusion attack: never allow both families at once.
        fail("auth.algorithms", list(auth.algorithms), "cannot mix HS* with RS256/ES256")
    if auth.leeway < 0:
        fail("auth.leeway", auth.leeway, "must not be negative")
    positive("auth.auth_timeout", auth.auth_timeout)
    positive("auth.max_token_bytes", auth.max_token_bytes)
    if not auth.cookie_name or any(c in auth.cookie_name for c in ' ;,="\t'):
        fail("auth.cookie_name", auth.cookie_name, "must be a non-empty cookie name")
    if auth.private_key_file:
        readable("auth.private_key_file", auth.private_key_file)

    if hmac:
        if auth.secret == DEV_SECRET and not is_loopback(host):
            fail("auth.secret", _REDACTED, "the development secret is only accepted on loopback")
        if not auth.secret:
            if not (auth.dev_secret_on_loopback and is_loopback(host)):
                fail(
                    "auth.secret",
                    "",
                    "required when server.host is not loopback; set RTCS_JWT_SECRET",
                )
            auth = dataclasses.replace(auth, secret=DEV_SECRET)
        strongest = max(hmac, key=_HMAC_MIN_SECRET_BYTES.__getitem__)
        need = _HMAC_MIN_SECRET_BYTES[strongest]
        if len(auth.secret.encode()) < need:
            shown = "(development secret)" if auth.using_dev_secret else _REDACTED
            fail("auth.secret", shown, f"must be at least {need} bytes for {strongest}")
        return auth

    if not auth.public_key_file and not auth.jwks_file:
        fail("auth.public_key_file", "", f"{auth.algorithms[0]} needs public_key_file or jwks_file")
    for key in ("public_key_file", "jwks_file"):
        if getattr(auth, key):
            readable(f"auth.{key}", getattr(auth, key))
    return auth


def _validate_rbac(rbac: Mapping[str, Any]) -> None:
    try:
        from rtcs.auth.permissions import Policy
    except ImportError:
        # Before the permissions module exists only the shape can be checked.
        roles = rbac.get("roles")
        if not isinstance(roles, Mapping):
            raise ConfigError("rbac.roles", roles, "expected a table of roles") from None
        return
    Policy.from_mapping(rbac)
