"""The settings themselves: one frozen dataclass per section, and their vocabularies.

Every default here is mirrored by ``conf/rtcs.toml`` and documented in
docs/configuration.md (tests keep the three equal). The allowed values of the
named choices are not repeated here: strategies come from
:class:`rtcs.runtime.policy.Strategy`, log levels and formats from
:mod:`rtcs.logs`, the JSON depth from :mod:`rtcs.protocol.codec`.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rtcs.logs import FORMATS, LEVELS
from rtcs.protocol.codec import DEFAULT_MAX_DEPTH
from rtcs.runtime.policy import Strategy

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256"})
ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS

STRATEGIES = frozenset(s.value for s in Strategy)
LOG_LEVELS = frozenset(LEVELS)
LOG_FORMATS = frozenset(FORMATS)
BACKEND_KINDS = frozenset({"memory", "redis"})
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"})
TRACING_EXPORTERS = frozenset({"none", "console", "otlp"})

# What a secret is shown as in errors and in ``as_dict(redact=True)``.
REDACTED = "***"

# Field metadata of a value load() derives, which is not a setting.
DERIVED = "derived"


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (brackets allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``[server]``: where rtcs listens, how it opens and closes connections."""

    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/ws"
    workers: int = 1
    node_id: str = ""  # empty: the app generates "<hostname>-<pid>" at start
    drain_timeout: float = 10.0
    # On shutdown, seconds /readyz (and new upgrades) answer 503 while the
    # listener stays open, before any client is closed (load balancers see it).
    drain_grace: float = 1.0
    # After the clients are closed, with a shared backend: seconds (within
    # drain_timeout) the node keeps delivering to its detached sessions
    # while they resume elsewhere.
    drain_handover: float = 2.0
    tls_cert: str = ""
    tls_key: str = ""
    allowed_origins: tuple[str, ...] = ()
    # A connection whose actor has not started by then is closed with 1013.
    open_timeout: float = 5.0
    # A server-initiated close waits this long for the client's close frame,
    # then aborts the TCP connection.
    close_timeout: float = 2.0
    # How often write buffers and open timeouts are checked.
    watchdog_interval: float = 0.5
    # Peers (IP addresses or CIDR networks) whose X-Forwarded-For and PROXY
    # protocol v2 header are believed; empty: none (docs/operations.md).
    trusted_proxies: tuple[str, ...] = ()
    # Test only: a path (e.g. "/__echo") served by an echo endpoint for the
    # Autobahn suite, without auth; empty: off.
    test_echo_path: str = ""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """``[auth]``: how tokens are verified and where they may come from.

    ``secret`` holds the effective secret: when none was configured on a
    loopback host, the random development secret read from (or created in)
    ``dev_secret_file`` (:mod:`rtcs.config.devsecret`); then ``dev_secret_file``
    holds the file's effective path and :attr:`using_dev_secret` is true.
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
    # Seconds a token's exp may lie beyond now (plus leeway); further: refused.
    max_token_lifetime: float = 86400.0
    revocation_poll_interval: float = 1.0
    dev_secret_on_loopback: bool = True
    # Empty: $XDG_STATE_HOME/rtcs/dev-secret, else ~/.local/state/rtcs/dev-secret.
    dev_secret_file: str = ""
    # Not a setting (no key, no variable): set by load() when ``secret`` is the
    # development secret from ``dev_secret_file``.
    using_dev_secret: bool = field(default=False, metadata={DERIVED: True})

    @property
    def uses_hmac(self) -> bool:
        """True when the pinned algorithms are HS* (a shared secret)."""
        return bool(HMAC_ALGORITHMS.intersection(self.algorithms))


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """``[limits]``: per-connection and per-node limits (docs/protocol.md, "Limits")."""

    max_message_size: int = 65536
    outbox_bytes: int = 1048576
    rate: float = 100.0
    burst: int = 200
    # Client bytes (text length of each frame) per second per connection, and
    # the bucket size; byte_burst must be at least max_message_size.
    byte_rate: float = 262144.0
    byte_burst: int = 1048576
    rate_limit_close_after: int = 100
    rate_limit_window: float = 10.0
    max_subscriptions: int = 256
    max_rooms: int = 256
    max_connections_per_address: int = 1000
    max_connections_per_user: int = 100
    max_connections_per_node: int = 50000
    max_json_depth: int = DEFAULT_MAX_DEPTH
    fanout_chunk: int = 1000
    inbound_queue: int = 128
    # Incoming frames kept per connection before its actor is admitted; more:
    # the socket is not read until then (rtcs.gateway.frontdoor).
    ws_max_queue: int = 64
    # Frames held while a session is restored from the shared store; more: 1013.
    held_frames: int = 64
    # Seconds an HTTP API request (POST /api/*) waits for routing's answer,
    # besides the longest route plugin timeout; then 503.
    api_timeout: float = 5.0
    # Sockets still waiting for their first-frame auth, per node process and
    # per address; more: HTTP 429. They do not count toward the node cap.
    max_pending_auth: int = 1000
    max_pending_auth_per_address: int = 100
    # Connection-actor crashes of one user (or, before auth, one address)
    # within crash_penalty seconds before its new connections are refused
    # (HTTP 429, or 4029 on a first-frame auth) for crash_penalty seconds.
    crash_threshold: int = 3
    crash_penalty: float = 30.0
    # Publish de-duplication: a publish whose id this session used within
    # dedup_window seconds is acked again ("duplicate": true), not delivered;
    # at most dedup_max_ids ids are remembered per session.
    dedup_window: float = 60.0
    dedup_max_ids: int = 1000
    # Detached sessions per user on this node, and replay-buffer bytes of all
    # detached sessions of this node; past either the oldest detached
    # sessions are evicted (expired early).
    max_detached_sessions: int = 10
    max_detached_buffered_bytes: int = 268435456
    # Milliseconds message frames may wait to be written together with more
    # to the same connection; 0: written at the end of the loop iteration
    # that produced them. Replies (acks, errors) never wait past it.
    batch_window_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """``[session]``: how long a dropped session stays resumable, and its buffer."""

    ttl: float = 120.0
    replay_buffer: int = 1000
    # At most this long between checks of detached sessions for expiry.
    reap_interval: float = 1.0
    # Mirror attached sessions to the shared store too (one store write per
    # delivery, batched), so they survive the crash of their instance.
    crash_safe: bool = False
    # Delivery receipts (docs/protocol.md "Delivery receipts"): seconds without
    # a receipt before a message is redelivered, and how many times it is.
    receipt_timeout: float = 5.0
    receipt_attempts: int = 3


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
    # redis://, rediss:// (TLS), unix://; redis+cluster:// or rediss+cluster://
    # name one seed node of a Redis Cluster (sharded pub/sub).
    redis_url: str = "redis://127.0.0.1:6379/0"
    # First part of every key and channel, so deployments can share a Redis.
    redis_prefix: str = "rtcs"
    # Pub/sub channels that topics, users and rooms hash onto.
    redis_shards: int = 16
    # Seconds a Redis command may take; a call against a frozen Redis fails after this.
    redis_command_timeout: float = 0.5
    redis_connect_timeout: float = 0.5
    # Connections per Redis server (per master in a Cluster).
    redis_pool_size: int = 32
    # Seconds of silence after which the subscriber pings Redis: a frozen Redis
    # is noticed within this plus redis_command_timeout.
    redis_ping_interval: float = 0.25
    # Seconds between this node's presence heartbeats.
    presence_heartbeat: float = 10.0
    # Seconds after its last heartbeat that a silent (crashed) node's users drop out.
    node_ttl: float = 30.0


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """``[breaker]``: the circuit breaker around the shared backend (docs/operations.md)."""

    # Consecutive failed backend calls that open the breaker.
    failure_threshold: int = 5
    # Consecutive successful trial calls (half-open) that close it again.
    success_threshold: int = 2
    # Seconds the breaker stays open before it lets a trial call through.
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """One supervisor's restart policy; the runtime converts the strategy name."""

    strategy: str = "one_for_one"
    max_restarts: int = 3
    within: float = 5.0


@dataclass(frozen=True, slots=True)
class SupervisionSettings:
    """``[supervision.<name>]``: the restart policy of each supervisor.

    The field names are the supervisor names (:data:`SUPERVISORS`), in start order.
    """

    system: SupervisorSettings = SupervisorSettings("one_for_one", 3, 5.0)
    server: SupervisorSettings = SupervisorSettings("rest_for_one", 3, 5.0)
    # Connection actors are temporary anyway: restarts are cheap and frequent.
    connections: SupervisorSettings = SupervisorSettings("one_for_one", 100, 1.0)
    router: SupervisorSettings = SupervisorSettings("all_for_one", 5, 10.0)
    metrics: SupervisorSettings = SupervisorSettings("all_for_one", 5, 10.0)
    # Plugins crash independently of each other and of rtcs's own actors.
    plugins: SupervisorSettings = SupervisorSettings("one_for_one", 5, 30.0)


#: The supervisor names, in start order.
SUPERVISORS = tuple(f.name for f in dataclasses.fields(SupervisionSettings))


@dataclass(frozen=True, slots=True)
class LogSettings:
    """``[log]``: level and output format."""

    level: str = "info"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics]``: the Prometheus endpoint and the periodic statistics."""

    enabled: bool = True
    path: str = "/metrics"
    # How often gauges are sampled and the event-loop lag measured.
    sample_interval: float = 1.0
    # How often the rolling "stats" log line is written; at least sample_interval.
    report_interval: float = 60.0
    # With server.workers > 1: worker I also serves the metrics path alone on
    # worker_port + I, so each worker can be scraped; 0 turns it off.
    worker_port: int = 0
    # A topic the node publishes its live figures to every sample_interval
    # (connections, rates, restarts, breaker); empty: none, unless
    # demo.enabled (then DEMO_STATS_TOPIC). See Settings.stats_topic.
    stats_topic: str = ""


@dataclass(frozen=True, slots=True)
class RulesSettings:
    """``[rules]``: the routing-rules file (docs/rules.md)."""

    # Path of a TOML rules file; empty: no rules.
    file: str = ""
    # Topics whose matching rules the route cache remembers (oldest out first).
    cache_size: int = 10000


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """``[tracing]``: OpenTelemetry spans along each message's path (docs/operations.md)."""

    # none (off: no OpenTelemetry work at all), console (spans as JSON lines on
    # stdout) or otlp (OTLP over HTTP to ``endpoint``).
    exporter: str = "none"
    # Share of client messages traced, 0.0-1.0, drawn for each where it enters
    # (the instances a traced message reaches trace it too).
    sample_ratio: float = 1.0
    service_name: str = "rtcs"
    # The OTLP/HTTP traces URL (exporter = "otlp").
    endpoint: str = "http://127.0.0.1:4318/v1/traces"


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """``[demo]``: the demo page ``/demo`` and its token endpoint (docs/operations.md).

    Never on in production: ``POST /demo/token`` gives a token to anyone who asks.
    """

    enabled: bool = False
    # Seconds a token from POST /demo/token is valid (the page fetches a new one).
    token_ttl: float = 600.0


#: The stats topic while ``demo.enabled`` and ``metrics.stats_topic`` is empty:
#: under ``system.``, which the default policy lets no client publish to.
DEMO_STATS_TOPIC = "system.stats"


def _default_rbac() -> Mapping[str, Any]:
    from rtcs.auth.permissions import DEFAULT_RBAC

    return types.MappingProxyType(copy.deepcopy(dict(DEFAULT_RBAC)))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Every rtcs setting. Build it with :func:`rtcs.config.load`; never mutate it."""

    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    session: SessionSettings = SessionSettings()
    heartbeat: HeartbeatSettings = HeartbeatSettings()
    backend: BackendSettings = BackendSettings()
    breaker: BreakerSettings = BreakerSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    rules: RulesSettings = RulesSettings()
    tracing: TracingSettings = TracingSettings()
    demo: DemoSettings = DemoSettings()
    # A plain mapping (role name -> rules) validated by rtcs.auth.permissions.
    rbac: Mapping[str, Any] = field(default_factory=_default_rbac)
    # Plugin actors: name -> "package.module:ActorClass", or a table with
    # ``actor`` and the plugin's own options (see rtcs.plugins).
    plugins: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))

    @property
    def stats_topic(self) -> str:
        """Where the node publishes its live figures: ``metrics.stats_topic``, else
        :data:`DEMO_STATS_TOPIC` while ``demo.enabled``, else ``""`` (nowhere)."""
        return self.metrics.stats_topic or (DEMO_STATS_TOPIC if self.demo.enabled else "")

    def with_overrides(
        self, overrides: Mapping[str, Any] | None = None, /, **dotted: Any
    ) -> Settings:
        """Return a copy with dotted keys replaced, validated like :func:`rtcs.config.load`.

        ``settings.with_overrides({"server.port": 0})`` or
        ``settings.with_overrides(**{"log.level": "debug"})``.

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        # Imported here: the loader builds Settings, so it imports this module.
        from rtcs.config.sources import override

        return override(self, {**(overrides or {}), **dotted})

    def as_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """Return the settings as nested plain dicts, lists and scalars.

        With ``redact=True`` a non-empty ``auth.secret`` is replaced by ``"***"``
        (use it before logging the effective configuration).
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("rbac", "plugins"):
                continue
            out[f.name] = _plain(dataclasses.asdict(getattr(self, f.name)))
        out["rbac"] = copy.deepcopy(dict(self.rbac))
        out["plugins"] = dict(self.plugins)
        if redact and out["auth"]["secret"]:
            out["auth"]["secret"] = REDACTED
        return out
