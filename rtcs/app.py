"""The composition root: builds one rtcs node and runs it.

``App`` builds everything once and passes it down explicitly: settings,
metrics registry, logger, backends, permissions, token verifier, the actor
system on the running event loop (with the supervision tree from
``rtcs.actors.tree``) and the gateway. There are no hidden singletons, so tests
run several nodes in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rtcs import __version__, demo, logs
from rtcs.actors.connection_supervisor import DRAIN_SPREAD
from rtcs.actors.context import (
    CONNECTIONS,
    ROUTE_BROADCAST,
    ROUTE_DIRECT,
    ROUTE_HANDLERS,
    ROUTE_ROOM,
    ROUTE_TOPIC,
    NodeContext,
)
from rtcs.actors.messages import (
    BackendStatus,
    Drain,
    RemoteEnvelope,
    SessionAbsent,
    SessionMoved,
)
from rtcs.actors.tree import SystemSupervisor, build_tree
from rtcs.auth.permissions import Policy
from rtcs.auth.tokens import TokenVerifier
from rtcs.backends.base import Backends, Envelope, EnvelopeKind
from rtcs.backends.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from rtcs.backends.guarded import guard
from rtcs.backends.memory import MemoryRevocationStore, memory_backends
from rtcs.backends.writebehind import SessionWriteBehind
from rtcs.config import Settings
from rtcs.errors import CloseCode, ConfigError, Unavailable
from rtcs.gateway.server import Gateway
from rtcs.metrics import Metrics
from rtcs.plugins import load_plugins
from rtcs.revocations import Revocation, RevocationTable, Revoker
from rtcs.rulesfile import Reload
from rtcs.runtime.actor_system import ActorSystem
from rtcs.runtime.control import start_system, stop_system
from rtcs.runtime.directory import Directory
from rtcs.runtime.supervision import SupervisorEvent
from rtcs.sessions import SessionRegistry
from rtcs.tracing import Tracing, build_tracing, close_tracing, use_tracing
from rtcs.workers import ConnectionCounter, LocalCounter

_ROUTE_BY_KIND: dict[EnvelopeKind, str] = {
    "topic": ROUTE_TOPIC,
    "user": ROUTE_DIRECT,
    "connection": ROUTE_DIRECT,
    "room": ROUTE_ROOM,
    "presence": ROUTE_ROOM,
    "global": ROUTE_BROADCAST,
    "filter": ROUTE_BROADCAST,
}
# Every actor that must be running for the node to be ready.
_REQUIRED = (CONNECTIONS, *ROUTE_HANDLERS)
# Seconds between looks at the backend's health (at most half the breaker
# timeout), and between probe calls while the breaker is closed.
PROBE_INTERVAL = 0.25
#: Seconds a stopping node waits for a revocation read in flight to finish.
REVOCATION_STOP_TIMEOUT = 2.0
PROBE_CALL_INTERVAL = 1.0


def build_backends(settings: Settings) -> Backends:
    """The backends ``backend.kind`` names: in-memory, or Redis (``[backend]``)."""
    backend = settings.backend
    if backend.kind != "redis":
        return memory_backends()
    from rtcs.backends.redis import redis_backends

    return redis_backends(
        backend.redis_url,
        prefix=backend.redis_prefix,
        shards=backend.redis_shards,
        command_timeout=backend.redis_command_timeout,
        connect_timeout=backend.redis_connect_timeout,
        pool_size=backend.redis_pool_size,
        ping_interval=backend.redis_ping_interval,
        heartbeat_interval=backend.presence_heartbeat,
        node_ttl=backend.node_ttl,
    )


async def close_backends(backends: Backends, node_id: str, log: Any) -> None:
    """Leave the shared backend cleanly: drop this node's presence, close every part."""
    if backends.broker.distributed:
        try:
            await backends.presence.drop_node(node_id)
        except Exception as exc:  # the backend is down: its node TTL cleans up
            log.warning("could not drop this node's presence", error=type(exc).__name__)
    with contextlib.suppress(Exception):
        await backends.broker.close()
    for store in (backends.sessions, backends.presence):
        aclose = getattr(store, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


class App:
    """One rtcs node: actor system + gateway + backends.

    Obligations: ``start()`` and ``stop()`` run on the same event loop.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        backends: Backends | None = None,
        instance: ConnectionCounter | None = None,
    ) -> None:
        self.settings = settings
        # Open connections of the whole instance (all workers); rtcs.workers.
        self.instance: ConnectionCounter = instance if instance is not None else LocalCounter()
        self.node_id = settings.server.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = Metrics()
        self.metrics.set_build(node=self.node_id)
        # The node's own tracer provider (None: tracing off); rtcs.tracing.
        self.tracing: Tracing | None = build_tracing(settings.tracing, self.node_id)
        # bind() resolves the lazy proxy once, so each log call is direct.
        self.log = logs.get_logger("rtcs", node=self.node_id).bind()
        # The backends as built, and (once started) as the actors use them:
        # behind the circuit breaker.
        self.raw_backends = backends or build_backends(settings)
        self.breaker = CircuitBreaker(
            BreakerPolicy(
                settings.breaker.failure_threshold,
                settings.breaker.success_threshold,
                settings.breaker.timeout,
            ),
            self._breaker_changed,
        )
        self.backends, self._probe = guard(self.raw_backends, self.breaker, time.monotonic)
        self._prober: asyncio.Task[None] | None = None
        self._revocation_poll: asyncio.Task[None] | None = None
        self._revocations_stopping = asyncio.Event()
        self.directory = Directory()
        self.stopped = asyncio.Event()
        self.system: ActorSystem | None = None
        self.gateway: Gateway | None = None
        self.ctx: NodeContext | None = None
        self._root: Any = None
        self._ready = False
        self._fatal: str | None = None

    @property
    def port(self) -> int:
        return self.gateway.port if self.gateway else 0

    async def start(self) -> int:
        """Start backends, the actor tree and the gateway; returns the port."""
        settings = self.settings
        if settings.auth.using_dev_secret:
            self.log.warning(
                "auth.secret is not set: using this installation's development secret"
                " (loopback only); set RTCS_JWT_SECRET for anything else",
                dev_secret_file=settings.auth.dev_secret_file,
            )
        if settings.demo.enabled:
            self.log.warning(
                "demo.enabled: /demo/token gives a token to anyone who asks;"
                " never enable the demo in production",
                stats_topic=settings.stats_topic,
            )
        ctx = self.ctx = NodeContext(
            settings=settings,
            node_id=self.node_id,
            metrics=self.metrics,
            backends=self.backends,
            # With demo.enabled, the role "demo" too (rtcs.demo).
            policy=Policy.from_mapping(demo.policy_rbac(settings)),
            verifier=TokenVerifier(settings.auth),
            directory=self.directory,
            sessions=SessionRegistry(settings.session.replay_buffer),
            log=self.log,
            instance=self.instance,
        )
        use_tracing(ctx, self.tracing)
        self.metrics.watch_receipts(ctx.sessions.receipt_counts)
        plugins = load_plugins(settings, ctx)
        if settings.rules.file:
            self._use_rules(ctx)
        if self.backends.broker.distributed:
            ctx.write_behind = SessionWriteBehind(
                self.backends.sessions,
                settings.session.replay_buffer,
                self._session_lost,
                node=self.node_id,
                ttl=settings.session.ttl,
                crash_safe=settings.session.crash_safe,
                on_moved=self._session_moved,
                on_absent=self._session_absent,
            )
        await self.backends.broker.start(self.node_id, self._from_broker)
        self._prober = asyncio.get_running_loop().create_task(self._probe_backend())
        await self._start_revocations(ctx)
        self.system = start_system()
        self._root = self.system.createActor(SystemSupervisor)
        self.system.tell(self._root, build_tree(ctx, self._on_supervisor_event, plugins))
        await self._wait_for_tree()
        self.gateway = Gateway(ctx, self.system.tell, self.readiness)
        ctx.after_write = self.gateway.coalescer.after_flush
        self.gateway.reload_rules = self.reload_rules
        port = await self.gateway.start()
        # Long-lived start-up objects never need collecting: keep the
        # collector off them (docs/performance.md: halves fan-out cost at scale).
        gc.collect()
        gc.freeze()
        self._ready = True
        self.log.info("rtcs started", host=settings.server.host, port=port, version=__version__)
        return port

    # -- routing rules (docs/rules.md) ---------------------------------------------------

    def _use_rules(self, ctx: NodeContext) -> None:
        """Load the rules file at start (validated with the settings already)."""
        from rtcs.rulesfile import load_rule_set

        rules = ctx.rules = load_rule_set(self.settings.rules.file, self.settings.rules.cache_size)
        self.metrics.rules_loaded((rule.name for rule in rules.rules), rules.version)
        self.metrics.watch_route_cache(rules.cache_stats)
        self.log.info(
            "rules loaded", file=self.settings.rules.file, rules=len(rules), version=rules.version
        )

    async def reload_rules(self) -> Reload:
        """Read the rules file again and use it from the next publish on (SIGHUP,
        ``POST /admin/rules/reload``).

        The file is read and compiled off the event loop, then swapped in at
        once, so every publish sees either the old rules or the new ones. A
        file that cannot be read or has a bad rule is logged as an error
        naming the file, the rule and the field, and the old rules stay.
        """
        from rtcs.rulesfile import read_rules

        ctx, path = self.ctx, self.settings.rules.file
        if ctx is None or ctx.rules is None:
            self.log.warning("reload requested, but no rules file is configured (rules.file)")
            return Reload(False, configured=False, error="no rules file is configured")
        previous = ctx.rules.version
        try:
            rules, version = await asyncio.to_thread(read_rules, path)
        except ConfigError as exc:  # RuleError included
            self.metrics.rules_reloaded(False)
            self.log.error(
                "rules reload failed; the old rules stay",
                error=str(exc),
                file=path,
                version=previous,
            )
            kept = len(ctx.rules.rules)
            return Reload(False, previous, previous, kept, error=str(exc))
        ctx.rules.replace(rules, version)
        self.metrics.rules_loaded((rule.name for rule in ctx.rules.rules), version)
        self.metrics.rules_reloaded(True)
        self.log.info(
            "rules reloaded", file=path, rules=len(rules), version=version, previous=previous
        )
        return Reload(True, version, previous, len(rules))

    async def _wait_for_tree(self) -> None:
        # The tree starts in a few loop turns; poll the directory briefly
        # rather than guess. Route plugins too: a publish on their topics
        # before they run would fail ("not running").
        ctx = self.ctx
        names = (*_REQUIRED, *(spec.name for spec in ctx.route_plugins)) if ctx else _REQUIRED
        for _ in range(1000):
            if all(self.directory.lookup(name) is not None for name in names):
                return
            await asyncio.sleep(0)
        raise RuntimeError("the actor tree did not start")

    def readiness(self) -> str | None:
        """None when ready; else why not (for ``/readyz`` and the handshake)."""
        if not self._ready:
            return "stopping" if self.ctx and self.ctx.shutting_down else "starting"
        if self._fatal:
            return self._fatal
        missing = [name for name in _REQUIRED if self.directory.lookup(name) is None]
        if missing:
            return "restarting: " + ", ".join(missing)
        # A shared-backend outage is degraded mode, not "not ready": local
        # delivery goes on, and every instance shares the backend.
        return None

    # -- the shared backend's breaker (docs/operations.md, "Degraded mode") ----------

    def _breaker_changed(self, old: BreakerState, new: BreakerState) -> None:
        self.metrics.breaker(new.value)
        log = self.log.warning if new is not BreakerState.CLOSED else self.log.info
        log("backend breaker", state=new.value, was=old.value)
        degraded = new is not BreakerState.CLOSED
        if self.ctx is None or self.ctx.degraded == degraded:
            return
        self.ctx.degraded = degraded
        if not degraded:
            self._resync_presence(self.ctx)
        supervisor = self.directory.lookup(CONNECTIONS)
        if supervisor is not None and self.system is not None:
            self.system.tell(supervisor, BackendStatus(degraded))

    def _resync_presence(self, ctx: NodeContext) -> None:
        """Write this node's live connections and room members to presence again.

        Whatever presence updates failed during the outage are lost, and a
        Redis that restarted lost everything: after an outage the node states
        again what it holds (the writes are idempotent).
        """
        presence = ctx.backends.presence
        for session in ctx.sessions:
            if session.connection_id is None:
                continue
            ctx.background.submit(
                presence.add_connection, session.user, session.connection_id, self.node_id
            )
            for room in session.rooms:
                ctx.background.submit(presence.join, room, session.user, session.id, self.node_id)

    async def _probe_backend(self) -> None:
        """Watch the shared backend, so the breaker does not wait for client traffic.

        Every ``PROBE_INTERVAL``: a broker that reports itself down (its
        subscription dropped, or Redis stopped answering its pings) trips the
        breaker at once; about once a second (and whenever an open breaker
        allows a trial) one cheap call goes through the breaker.
        """
        breaker, broker = self.breaker, self.raw_backends.broker
        interval = min(PROBE_INTERVAL, self.settings.breaker.timeout / 2)
        every = max(1, round(PROBE_CALL_INTERVAL / interval))
        tick = 0
        while True:
            await asyncio.sleep(interval)
            tick += 1
            now = time.monotonic()
            state = breaker.state
            if state is BreakerState.CLOSED:
                if broker.distributed and not broker.healthy():
                    breaker.trip(now)
                    continue
                if tick % every:
                    continue
            elif state is BreakerState.OPEN and not breaker.allow(now):
                continue
            try:
                await self._probe()
            except Unavailable:
                pass
            except Exception as exc:  # a probe must never end the loop
                self.log.warning("backend probe failed", error=type(exc).__name__)

    # -- revocations (docs/security.md, "Revocation") ----------------------------------

    async def _start_revocations(self, ctx: NodeContext) -> None:
        """Load the shared revocation log and keep reading it."""
        auth = self.settings.auth
        store = self.raw_backends.revocations or MemoryRevocationStore()
        table = RevocationTable()
        ctx.verifier.revocations = table
        ctx.revoker = Revoker(
            store,
            table,
            lifetime=auth.max_token_lifetime + auth.leeway,
            clock=ctx.wall,
            on_revoked=self._revoked,
        )
        await self._catch_up(ctx.revoker)
        interval = auth.revocation_poll_interval
        self._revocation_poll = asyncio.get_running_loop().create_task(
            self._poll_revocations(ctx.revoker, interval)
        )

    async def _poll_revocations(self, revoker: Revoker, interval: float) -> None:
        stopping = self._revocations_stopping
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)
                return
            await self._catch_up(revoker)

    async def _catch_up(self, revoker: Revoker) -> None:
        try:
            await revoker.catch_up()
        except Unavailable as exc:  # retried at the next poll
            self.log.warning("revocations unavailable", error=str(exc)[:200])
        except Exception as exc:  # the poll must never end
            self.log.error("reading revocations failed", error=type(exc).__name__)

    def _revoked(self, revocation: Revocation) -> None:
        """Close this node's sockets of a revoked user or session (4001)."""
        ctx = self.ctx
        if ctx is None:
            return
        if revocation.kind == "user":
            sessions = list(ctx.sessions.attached_of(revocation.target))
        else:
            found = ctx.sessions.get(revocation.target)
            sessions = [found] if found is not None else []
            ctx.background.submit(ctx.backends.sessions.delete, revocation.target)
        closed = 0
        for session in sessions:
            if session.sink is not None:
                session.sink.close(CloseCode.AUTH_FAILED, "revoked")
                closed += 1
        self.log.info("revoked", kind=revocation.kind, target=revocation.target, closed=closed)

    def _from_broker(self, envelope: Envelope) -> None:
        if self.system is None:
            return
        address = self.directory.lookup(_ROUTE_BY_KIND[envelope.kind])
        if address is not None:
            self.system.tell(address, RemoteEnvelope(envelope))

    def _session_lost(self, session_id: str) -> None:
        self._to_connections(SessionMoved(session_id))

    def _session_moved(self, session_id: str) -> None:
        self._to_connections(SessionMoved(session_id, owned_elsewhere=True))

    def _session_absent(self, session_id: str) -> None:
        self._to_connections(SessionAbsent(session_id))

    def _to_connections(self, msg: object) -> None:
        address = self.directory.lookup(CONNECTIONS)
        if address is not None and self.system is not None:
            self.system.tell(address, msg)

    def _on_supervisor_event(self, event: SupervisorEvent) -> None:
        if event.kind == "restarted":
            self.metrics.restart(event.supervisor, event.strategy.value)
            self.log.warning(
                "actor restarted",
                supervisor=event.supervisor,
                strategy=event.strategy.value,
                child=event.child,
                reason=event.reason[:200],
            )
        elif event.kind == "gave_up":
            # rtcs.runtime logs it (an error naming the supervisor and the crash).
            self.metrics.escalated(event.supervisor)
        elif event.kind == "escalated" and event.supervisor == "system":
            self._fatal = "actor system failed"
            self.log.error("root supervisor gave up; stopping", reason=event.reason[:200])
            self.stopped.set()

    async def stop(self, code: int = CloseCode.GOING_AWAY) -> None:
        """Drain and stop (docs/operations.md, "Shutdown"), in this order:

        1. not ready: for ``server.drain_grace`` seconds ``/readyz`` and new
           upgrades answer 503 while the port stays open and no client is
           closed, so a load balancer takes the node out first;
        2. stop accepting; close every client with ``code``, spread over
           the first ``DRAIN_SPREAD`` of ``server.drain_timeout``
           (:meth:`_close_clients`); wait for them until the drain timeout,
           then abort the rest;
        3. with a shared backend, keep delivering to the detached sessions
           (written to the shared store) for ``server.drain_handover``, so
           what is published while their clients resume elsewhere is in what
           the other instance claims (:meth:`_hand_over`);
        4. stop the actors, flush the backend writes still queued, close the
           backends.
        """
        if self.ctx is None:
            return
        self._ready = False
        self.ctx.shutting_down = True
        server = self.settings.server
        if self.gateway is not None:
            if server.drain_grace > 0:
                self.log.info("draining: not ready", grace=server.drain_grace)
                await asyncio.sleep(server.drain_grace)
            self.gateway.stop_accepting()
            deadline = asyncio.get_running_loop().time() + server.drain_timeout
            self._close_clients(self.gateway, code, server.drain_timeout)
            await self.gateway.wait_closed(server.drain_timeout)
            now = asyncio.get_running_loop().time()
            await self._hand_over(min(deadline, now + server.drain_handover))
        if self.system is not None:
            stop_system(self.system)
            self.system = None
        # The revocation poll ends between two reads (a backend call cancelled
        # halfway could leave its connection unusable for the close below).
        self._revocations_stopping.set()
        if self._revocation_poll is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._revocation_poll, REVOCATION_STOP_TIMEOUT)
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        await self.ctx.background.close()
        if self.ctx.write_behind is not None:
            await self.ctx.write_behind.close()
        await close_backends(self.raw_backends, self.node_id, self.log)
        await close_tracing(self.tracing)
        self.stopped.set()
        self.log.info("rtcs stopped")

    async def _hand_over(self, deadline: float) -> None:
        """Keep delivering to the detached sessions until ``deadline``
        (``server.drain_handover`` after the clients were closed, within
        ``server.drain_timeout``) while their clients resume elsewhere.

        With a shared backend, what a detached session receives is appended to
        the stored session: a message published while its client reconnects
        to another instance is then in what that instance claims and replays.
        Stopping the actors at once would lose those messages (nobody would
        hold the session until the claim). Ends early once no detached session
        is left here (claimed elsewhere, or expired). Without a shared backend
        there is nowhere to resume, so nothing waits.
        """
        ctx = self.ctx
        if ctx is None or not self.backends.broker.distributed:
            return
        loop = asyncio.get_running_loop()
        if ctx.sessions.detached_count() and loop.time() < deadline:
            self.log.info(
                "handing over detached sessions",
                sessions=ctx.sessions.detached_count(),
                until=round(deadline - loop.time(), 3),
            )
        while ctx.sessions.detached_count() and loop.time() < deadline:
            await asyncio.sleep(min(HAND_OVER_POLL, deadline - loop.time()))

    def _close_clients(self, gateway: Gateway, code: int, drain: float) -> None:
        """Close every client with ``code``, the last ones by ``DRAIN_SPREAD`` x ``drain``.

        The connection supervisor closes its connections in batches
        (``rtcs.actors.connection_supervisor.drain_plan``); without it (the
        actor system failed) the gateway closes every socket at once.
        """
        supervisor = self.directory.lookup(CONNECTIONS)
        reason = "server shutting down"
        if supervisor is not None and self.system is not None:
            self.system.tell(supervisor, Drain(int(code), reason, DRAIN_SPREAD * drain))
            return
        for handle in list(gateway.handles):
            handle.close(code, reason)


# The collector's default thresholds (700, 10, 10) make a burst of new
# connections trigger full collections over every live connection's objects
# again and again; raising them measured +20-45% connect rate at thousands of
# connections. Garbage cycles are still collected, in larger batches.
GC_THRESHOLDS = (50_000, 50, 100)


async def serve(
    settings: Settings,
    *,
    instance: ConnectionCounter | None = None,
    on_started: Callable[[App], Awaitable[None]] | None = None,
) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit code.

    ``instance`` counts the connections of every worker of the instance
    (rtcs.workers); ``on_started`` runs once the node is started (a worker
    starts its own metrics port there).
    """
    gc.set_threshold(*GC_THRESHOLDS)
    app = App(settings, instance=instance)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[Reload]] = set()

    def reload() -> None:
        task = loop.create_task(app.reload_rules())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await app.start()
    except Unavailable as exc:
        # Nothing was accepted yet: say which backend, exit non-zero, and let
        # the process manager retry.
        app.log.error(
            "backend unavailable at start",
            kind=settings.backend.kind,
            error=str(exc),
        )
        await app.stop()
        return 1
    if on_started is not None:
        await on_started(app)
    stopped = loop.create_task(app.stopped.wait())
    requested = loop.create_task(stop.wait())
    await asyncio.wait({stopped, requested}, return_when=asyncio.FIRST_COMPLETED)
    failed = app.stopped.is_set()
    requested.cancel()
    stopped.cancel()
    server = settings.server
    return await stop_within(app, server.drain_grace + server.drain_timeout + STOP_GRACE, failed)


#: Seconds between two looks at the detached sessions while handing them over (App.stop).
HAND_OVER_POLL = 0.1

#: Seconds a stop may take beyond ``server.drain_timeout`` before the node gives up on it.
STOP_GRACE = 5.0


async def stop_within(app: App, timeout: float, failed: bool = False) -> int:
    """``app.stop()`` bounded by ``timeout``; the exit status (1 if it timed out).

    A drain that hangs (a backend call that never returns) must not keep the
    process alive after SIGTERM: the process manager, or the parent of a
    worker, would have to SIGKILL it.
    """
    try:
        await asyncio.wait_for(app.stop(), timeout)
    except TimeoutError:
        app.log.error("stop did not finish in time; exiting", timeout=timeout)
        return 1
    return 1 if failed else 0
