"""Checks that need more than a value's type: ranges, choices, files, combinations.

:func:`validate` runs on every built :class:`~rtcs.config.settings.Settings`
(from :func:`rtcs.config.load` and ``Settings.with_overrides``). Each failure
is a :class:`~rtcs.errors.ConfigError` naming the dotted key, or the
environment variable the value came from.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from rtcs.config import devsecret
from rtcs.config.settings import (
    ALGORITHMS,
    BACKEND_KINDS,
    HMAC_ALGORITHMS,
    LOG_FORMATS,
    LOG_LEVELS,
    REDACTED,
    REDIS_SCHEMES,
    STRATEGIES,
    SUPERVISORS,
    TRACING_EXPORTERS,
    AuthSettings,
    Settings,
    SupervisorSettings,
    is_loopback,
)
from rtcs.errors import BadTopic, ConfigError
from rtcs.protocol.topics import validate_topic

__all__ = ["validate"]

# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
_HMAC_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


# Limits for which 0 has a meaning (checked on their own).
_LIMITS_MAY_BE_ZERO = frozenset({"batch_window_ms"})
#: The longest write-coalescing window, in milliseconds.
MAX_BATCH_WINDOW_MS = 1000.0
#: The most redeliveries of one message (``session.receipt_attempts``).
MAX_RECEIPT_ATTEMPTS = 1000


def validate(
    s: Settings, name: Callable[[str], str], dev_secret_file: Callable[[], str]
) -> Settings:
    """Check ``s``; return it with the effective auth secret filled in.

    ``name`` maps a dotted key to the name errors show (the environment
    variable the value came from, or the key itself). ``dev_secret_file``
    returns the default location of the development secret, used when it is
    needed and ``auth.dev_secret_file`` is empty: then the file is read, or
    created (:func:`rtcs.config.devsecret.read_or_create`).

    Raises:
        ConfigError: the first bad value or inconsistent combination, or a
            development secret file that cannot be created, read or trusted.
    """

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
    non_negative("server.drain_grace", server.drain_grace)
    non_negative("server.drain_handover", server.drain_handover)
    for key in ("open_timeout", "close_timeout", "watchdog_interval"):
        positive(f"server.{key}", getattr(server, key))
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
    for proxy in server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            fail("server.trusted_proxies", proxy, "expected an IP address or a CIDR network")
    if server.test_echo_path:
        url_path("server.test_echo_path", server.test_echo_path)
        if server.test_echo_path == server.path:
            fail("server.test_echo_path", server.test_echo_path, "must differ from server.path")

    def dev_secret(auth: AuthSettings) -> AuthSettings:
        path = os.path.abspath(auth.dev_secret_file or dev_secret_file())
        secret = devsecret.read_or_create(path, name("auth.dev_secret_file"))
        return dataclasses.replace(auth, secret=secret, dev_secret_file=path, using_dev_secret=True)

    auth = _validate_auth(s.auth, server.host, fail, positive, readable, dev_secret)
    s = dataclasses.replace(s, auth=auth)

    limits = s.limits
    for f in dataclasses.fields(limits):
        if f.name not in _LIMITS_MAY_BE_ZERO:
            positive(f"limits.{f.name}", getattr(limits, f.name))
    if not 0 <= limits.batch_window_ms <= MAX_BATCH_WINDOW_MS:
        fail(
            "limits.batch_window_ms",
            limits.batch_window_ms,
            f"must be between 0 and {MAX_BATCH_WINDOW_MS:g} (milliseconds)",
        )
    if limits.byte_burst < limits.max_message_size:
        # Else a frame of the largest accepted size could never pass.
        fail(
            "limits.byte_burst",
            limits.byte_burst,
            f"must be at least limits.max_message_size ({limits.max_message_size})",
        )

    positive("session.ttl", s.session.ttl)
    non_negative("session.replay_buffer", s.session.replay_buffer)
    positive("session.reap_interval", s.session.reap_interval)
    positive("session.receipt_timeout", s.session.receipt_timeout)
    if not 0 <= s.session.receipt_attempts <= MAX_RECEIPT_ATTEMPTS:
        fail(
            "session.receipt_attempts",
            s.session.receipt_attempts,
            f"must be between 0 and {MAX_RECEIPT_ATTEMPTS}",
        )
    for key in ("interval", "timeout", "idle_after"):
        positive(f"heartbeat.{key}", getattr(s.heartbeat, key))

    backend = s.backend
    if backend.kind not in BACKEND_KINDS:
        fail("backend.kind", backend.kind, f"expected one of {sorted(BACKEND_KINDS)}")
    if urllib.parse.urlsplit(backend.redis_url).scheme not in REDIS_SCHEMES:
        fail(
            "backend.redis_url",
            backend.redis_url,
            "expected a redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL",
        )
    if not backend.redis_prefix or any(c in backend.redis_prefix for c in "{} "):
        fail("backend.redis_prefix", backend.redis_prefix, "must be non-empty, without braces")
    for key in (
        "redis_shards",
        "redis_command_timeout",
        "redis_connect_timeout",
        "redis_pool_size",
        "redis_ping_interval",
        "presence_heartbeat",
        "node_ttl",
    ):
        positive(f"backend.{key}", getattr(backend, key))
    if backend.node_ttl <= backend.presence_heartbeat:
        fail("backend.node_ttl", backend.node_ttl, "must be longer than backend.presence_heartbeat")
    for key in ("failure_threshold", "success_threshold", "timeout"):
        positive(f"breaker.{key}", getattr(s.breaker, key))

    for sup in SUPERVISORS:
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

    metrics = s.metrics
    url_path("metrics.path", metrics.path)
    if metrics.enabled and metrics.path == server.path:
        fail("metrics.path", metrics.path, "must differ from server.path")
    positive("metrics.sample_interval", metrics.sample_interval)
    positive("metrics.report_interval", metrics.report_interval)
    if metrics.report_interval < metrics.sample_interval:
        # A report summarises samples: it cannot come more often than they do.
        fail(
            "metrics.report_interval",
            metrics.report_interval,
            "must be at least metrics.sample_interval",
        )
    if metrics.stats_topic:
        try:
            validate_topic(metrics.stats_topic)
        except BadTopic:
            fail("metrics.stats_topic", metrics.stats_topic, "must be a topic (not a pattern)")
    if not 0 <= metrics.worker_port <= 65535:
        fail("metrics.worker_port", metrics.worker_port, "must be between 0 and 65535")
    if metrics.worker_port and server.workers > 1:
        # Worker I listens on worker_port + I: every port must exist and
        # none may be the WebSocket port.
        last = metrics.worker_port + server.workers - 1
        if last > 65535:
            fail(
                "metrics.worker_port",
                metrics.worker_port,
                f"worker_port + server.workers - 1 = {last} is above 65535",
            )
        if metrics.worker_port <= server.port <= last:
            fail(
                "metrics.worker_port",
                metrics.worker_port,
                f"ports {metrics.worker_port}-{last} include server.port",
            )

    positive("rules.cache_size", s.rules.cache_size)
    if s.rules.file:
        readable("rules.file", s.rules.file)
        _validate_rules(s.rules.file)
    tracing = s.tracing
    if tracing.exporter not in TRACING_EXPORTERS:
        fail("tracing.exporter", tracing.exporter, f"expected one of {sorted(TRACING_EXPORTERS)}")
    if not 0.0 <= tracing.sample_ratio <= 1.0:
        fail("tracing.sample_ratio", tracing.sample_ratio, "must be between 0.0 and 1.0")
    if not tracing.service_name.strip():
        fail("tracing.service_name", tracing.service_name, "must not be empty")
    try:
        endpoint = urllib.parse.urlsplit(tracing.endpoint)
        endpoint.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        fail("tracing.endpoint", tracing.endpoint, "expected an http:// or https:// URL")
    if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
        fail("tracing.endpoint", tracing.endpoint, "expected an http:// or https:// URL")
    positive("demo.token_ttl", s.demo.token_ttl)
    if s.demo.enabled and s.demo.token_ttl > s.auth.max_token_lifetime:
        fail(
            "demo.token_ttl",
            s.demo.token_ttl,
            f"must not exceed auth.max_token_lifetime ({s.auth.max_token_lifetime:g})",
        )
    _validate_rbac(s.rbac)
    for plugin, entry in s.plugins.items():
        # "module:Class", true/false (an installed plugin), or a table with an
        # optional `actor` and `enabled` (rtcs.plugins, docs/plugins.md).
        if isinstance(entry, bool):
            continue
        key = f"plugins.{plugin}"
        if isinstance(entry, Mapping):
            enabled = entry.get("enabled", True)
            if not isinstance(enabled, bool):
                fail(f"{key}.enabled", enabled, "expected true or false")
            if "actor" not in entry:
                continue  # the installed package's plugin of that name
            target, key = entry["actor"], f"{key}.actor"
        elif isinstance(entry, str):
            target = entry
        else:
            fail(key, entry, "expected 'package.module:ActorClass', true, false or a table")
        if not isinstance(target, str) or ":" not in target:
            fail(key, target, "expected 'package.module:ActorClass'")
    return s


def _validate_auth(
    auth: AuthSettings,
    host: str,
    fail: Callable[[str, object, str], typing.NoReturn],
    positive: Callable[[str, float], None],
    readable: Callable[[str, str], None],
    dev_secret: Callable[[AuthSettings], AuthSettings],
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
    positive("auth.max_token_lifetime", auth.max_token_lifetime)
    positive("auth.revocation_poll_interval", auth.revocation_poll_interval)
    if not auth.cookie_name or any(c in auth.cookie_name for c in ' ;,="\t'):
        fail("auth.cookie_name", auth.cookie_name, "must be a non-empty cookie name")
    if auth.private_key_file:
        readable("auth.private_key_file", auth.private_key_file)

    if hmac:
        if not auth.secret:
            if not (auth.dev_secret_on_loopback and is_loopback(host)):
                fail(
                    "auth.secret",
                    "",
                    "required when server.host is not loopback (the development secret"
                    " is for loopback only); set RTCS_JWT_SECRET",
                )
            auth = dev_secret(auth)
        strongest = max(hmac, key=_HMAC_MIN_SECRET_BYTES.__getitem__)
        need = _HMAC_MIN_SECRET_BYTES[strongest]
        if len(auth.secret.encode()) < need:
            shown = "(development secret)" if auth.using_dev_secret else REDACTED
            fail("auth.secret", shown, f"must be at least {need} bytes for {strongest}")
        return auth

    if not auth.public_key_file and not auth.jwks_file:
        fail("auth.public_key_file", "", f"{auth.algorithms[0]} needs public_key_file or jwks_file")
    for key in ("public_key_file", "jwks_file"):
        if getattr(auth, key):
            readable(f"auth.{key}", getattr(auth, key))
    return auth


def _validate_rules(path: str) -> None:
    """Parse the rules file once, so a bad one stops the start naming rule and field.

    Raises:
        ConfigError: the file cannot be read.
        RuleError: the file is not a valid rules file (names file, rule and field).
    """
    from rtcs.rulesfile import read_rules

    read_rules(path)


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
