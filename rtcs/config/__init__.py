"""The rtcs configuration: one typed, frozen ``Settings`` object, loaded once.

Precedence, lowest first (docs/configuration.md is the reference):

1. built-in defaults (the dataclass defaults in :mod:`rtcs.config.settings`,
   mirrored by ``conf/rtcs.toml``);
2. the TOML file given to :func:`load`;
3. environment variables ``RTCS_<SECTION>_<KEY>`` (``RTCS_SERVER_PORT=9000``),
   plus ``RTCS_SUPERVISION_<NAME>_<KEY>`` and the alias ``RTCS_JWT_SECRET``;
4. explicit overrides with dotted keys (``{"server.port": 0}``), from the CLI.

Every bad value raises :class:`~rtcs.errors.ConfigError` naming the key (the
dotted key, or the environment variable it came from) and the value. Unknown
sections and keys in the file are errors, so a typo never passes silently.

This package does no I/O besides reading the TOML file, checking that the
configured key and certificate files are readable, and reading (on first use
creating) the development secret file; it never reads ``os.environ`` itself:
the caller passes the environment in.

The package, one concern per module:

- :mod:`rtcs.config.settings`: the frozen dataclasses, their defaults and the
  allowed values (algorithms, strategies, log levels, supervisor names);
- :mod:`rtcs.config.sources`: the schema, text and type coercion, the file,
  environment and override layers, and :func:`load`;
- :mod:`rtcs.config.validation`: ranges, choices, files and combinations;
- :mod:`rtcs.config.devsecret`: the per-installation development secret file.
"""

from rtcs.config.settings import (
    ALGORITHMS,
    ASYMMETRIC_ALGORITHMS,
    BACKEND_KINDS,
    HMAC_ALGORITHMS,
    LOG_FORMATS,
    LOG_LEVELS,
    STRATEGIES,
    SUPERVISORS,
    TRACING_EXPORTERS,
    AuthSettings,
    BackendSettings,
    BreakerSettings,
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
    is_loopback,
)
from rtcs.config.sources import load

__all__ = [
    "ALGORITHMS",
    "ASYMMETRIC_ALGORITHMS",
    "BACKEND_KINDS",
    "HMAC_ALGORITHMS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "STRATEGIES",
    "SUPERVISORS",
    "TRACING_EXPORTERS",
    "AuthSettings",
    "BackendSettings",
    "BreakerSettings",
    "HeartbeatSettings",
    "LimitsSettings",
    "LogSettings",
    "MetricsSettings",
    "RulesSettings",
    "ServerSettings",
    "SessionSettings",
    "Settings",
    "SupervisionSettings",
    "SupervisorSettings",
    "TracingSettings",
    "is_loopback",
    "load",
]
