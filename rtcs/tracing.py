"""Tracing: OpenTelemetry spans along one message's path, W3C trace context between nodes.

Off by default (``[tracing] exporter = "none"``): :func:`build_tracing` then
returns None, nothing of OpenTelemetry is imported, no provider exists, and
each actor on a message's path tests one attribute against None per message
(docs/performance.md, "Tracing"). Otherwise :class:`Tracing` owns the node's
``TracerProvider`` (its own, not the process-global one: tests run several
nodes in one process) and makes the spans of each client message that
``sample_ratio`` picks (:meth:`Tracing.sample`), one trace per message
(docs/operations.md, "Tracing")::

    rtcs.receive        the connection actor forwards the decoded frame
    └── rtcs.route      its route handler: rules, recipients, start of delivery
        ├── rtcs.rules      the routing rules, when some match the topic
        ├── rtcs.plugin     one per route-handler plugin asked
        └── rtcs.deliver    local fan-out and broker hand-off, until the ack
    and on every other node the message reaches, through the broker:
        rtcs.deliver    a child of the publishing node's rtcs.route

A server publish (plugins) starts its own trace at ``rtcs.route``. Between
nodes the publishing node's ``rtcs.route`` travels as a W3C ``traceparent``
(:func:`format_traceparent`, :func:`parse_traceparent`) in
``Envelope.trace``; a node with tracing off ignores it.

No OpenTelemetry context is attached or made current: an actor turn handles
one message, and the spans travel with the requests and continuations that
need them. Log lines about a message add :func:`trace_fields` (``trace_id``).

:data:`TRACING_KEY` is where the composition root leaves the node's
:class:`Tracing` in ``NodeContext.extra`` (:func:`use_tracing`); actors read it
once, when they start (:func:`tracing_of`).
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from rtcs import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from rtcs.actors.context import NodeContext
    from rtcs.config.settings import TracingSettings

__all__ = [
    "DELIVER",
    "PLUGIN",
    "RECEIVE",
    "ROUTE",
    "RULES",
    "TRACING_KEY",
    "Tracing",
    "build_tracing",
    "close_tracing",
    "format_traceparent",
    "parse_traceparent",
    "trace_fields",
    "trace_id_of",
    "tracing_of",
    "use_tracing",
]

# Span names.
RECEIVE = "rtcs.receive"
ROUTE = "rtcs.route"
RULES = "rtcs.rules"
PLUGIN = "rtcs.plugin"
DELIVER = "rtcs.deliver"

# Attribute names (rtcs.*); every value is a string, an int or a bool.
FRAME_TYPE = "rtcs.frame_type"
CONNECTION_ID = "rtcs.connection_id"
USER = "rtcs.user"
KIND = "rtcs.kind"
ORIGIN = "rtcs.origin"
FANOUT_SIZE = "rtcs.fanout_size"
FROM_NODE = "rtcs.from_node"
TOPIC = "rtcs.topic"
ROOM = "rtcs.room"
TO_USER = "rtcs.to_user"
TO_CONNECTION = "rtcs.to_connection"
PLUGIN_NAME = "rtcs.plugin_name"
RULES_MATCHED = "rtcs.rules.matched"
RULES_ERRORS = "rtcs.rules.errors"
DROPPED = "rtcs.dropped"
REROUTED_TO = "rtcs.rerouted_to"

#: The key of the node's :class:`Tracing` in ``NodeContext.extra``.
TRACING_KEY = "rtcs.tracing"

Attributes = Mapping[str, str | int | bool]

# W3C Trace Context, "traceparent" (https://www.w3.org/TR/trace-context/#traceparent-header):
# version-trace_id-parent_id-flags, lower-case hex; a later version may append fields.
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[0-9a-zA-Z_.:;=-]*)?"
)
#: The longest ``traceparent`` accepted (version 00 is 55 characters).
MAX_TRACEPARENT = 256


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """The W3C ``traceparent`` (version 00) of a span: ``00-<trace>-<span>-<flags>``.

    Raises:
        ValueError: an id is 0 or out of range, or ``flags`` is not a byte.
    """
    if not 0 < trace_id < 1 << 128 or not 0 < span_id < 1 << 64 or not 0 <= flags < 256:
        raise ValueError(f"not a valid span context: {trace_id:x}/{span_id:x}/{flags:x}")
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def parse_traceparent(text: str) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` of a W3C ``traceparent``; None when it is not one.

    Per the specification: version ``ff`` and all-zero ids are invalid; version
    00 has exactly four fields; a later version may carry more after them.
    """
    if len(text) > MAX_TRACEPARENT:
        return None
    found = _TRACEPARENT.fullmatch(text)
    if found is None:
        return None
    version, trace, span, flags, more = found.groups()
    if version == "ff" or (version == "00" and more):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags, 16)


def trace_id_of(span: Span) -> str:
    """The trace id of ``span`` as 32 lower-case hex digits (as exporters show it)."""
    return f"{span.get_span_context().trace_id:032x}"


def trace_fields(span: Span | None) -> dict[str, str]:
    """The fields a log line about a message adds: ``{"trace_id": ...}``, or none.

    ``span`` is the message's span (None when tracing is off or the message
    is not traced: the line then has no ``trace_id``).
    """
    return {} if span is None else {"trace_id": trace_id_of(span)}


class Tracing:
    """The node's tracer: the spans of a message's path, and its context between nodes.

    ``sample_ratio`` decides which messages are traced, by :meth:`sample`,
    before any span exists (``provider`` samples every root, and follows the
    parent for the rest): a message that is not sampled is not traced at
    all, and costs one random number. The odds are those of the SDK's
    ``TraceIdRatioBased`` (a random 64-bit number below ``sample_ratio`` x
    2^64).

    Obligations: used on the event loop's thread (the exporter of ``otlp``
    runs in the SDK's own thread); :func:`close_tracing` once, at stop.
    """

    def __init__(self, provider: TracerProvider, sample_ratio: float = 1.0) -> None:
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        self.provider = provider
        self._tracer = provider.get_tracer("rtcs", __version__)
        self._all = sample_ratio >= 1.0
        self._bound = round(sample_ratio * (1 << 64))  # sampled: trace id's low 64 bits below
        self._bits = random.getrandbits
        self._in_context = trace.set_span_in_context
        self._root = Context()  # no parent: a new trace
        self._stand_in = NonRecordingSpan
        self._span_context = SpanContext
        self._flags = TraceFlags
        self._status = Status
        self._error = StatusCode.ERROR
        self._server = SpanKind.SERVER
        self._internal = SpanKind.INTERNAL
        self._consumer = SpanKind.CONSUMER

    # -- spans ---------------------------------------------------------------------

    def sample(self) -> bool:
        """Whether to trace a new message (``sample_ratio``); ask before making its root."""
        return self._all or self._bits(64) < self._bound

    def receive(self, attributes: Attributes) -> Span:
        """Start ``rtcs.receive``, the root of a client message's trace (:meth:`sample` first)."""
        return self._tracer.start_span(
            RECEIVE, context=self._root, kind=self._server, attributes=attributes
        )

    def route(self, parent: Span | None, attributes: Attributes) -> Span:
        """Start ``rtcs.route`` under ``parent`` (a message's ``rtcs.receive``), or as
        the root of a new trace (a server publish: :meth:`sample` first)."""
        if parent is None:
            context = self._root
        elif not parent.get_span_context().trace_flags.sampled:
            return parent  # see :meth:`child`
        else:
            context = self._in_context(parent)
        return self._tracer.start_span(
            ROUTE, context=context, kind=self._internal, attributes=attributes
        )

    def child(self, name: str, parent: Span, attributes: Attributes) -> Span:
        """Start span ``name`` (``rtcs.rules``, ``rtcs.plugin``) under ``parent``.

        Under a parent that is not sampled (a ``traceparent`` from elsewhere
        saying so) this is ``parent`` itself, which records nothing (its
        ``end`` and attributes do nothing): the SDK would make a span that
        records nothing either, at a few microseconds each.
        """
        if not parent.get_span_context().trace_flags.sampled:
            return parent
        return self._tracer.start_span(
            name, context=self._in_context(parent), kind=self._internal, attributes=attributes
        )

    def deliver(self, parent: Span, kind: str, size: int, *, origin: str = "") -> Span:
        """Start ``rtcs.deliver`` of a fan-out to ``size`` local recipients under ``parent``.

        ``origin``: the node the message came from (``parent`` is then the
        stand-in :meth:`remote_parent` made from its ``traceparent``).
        """
        if not parent.get_span_context().trace_flags.sampled:
            return parent  # see :meth:`child`
        attributes: dict[str, str | int | bool] = {KIND: kind, FANOUT_SIZE: size}
        if origin:
            attributes[FROM_NODE] = origin
        return self._tracer.start_span(
            DELIVER,
            context=self._in_context(parent),
            kind=self._consumer if origin else self._internal,
            attributes=attributes,
        )

    def fail(self, span: Span, reason: str) -> None:
        """Mark ``span`` (not ended yet) failed: status ERROR with ``reason``."""
        span.set_status(self._status(self._error, reason))

    # -- between nodes -------------------------------------------------------------

    def traceparent(self, span: Span) -> str:
        """The W3C ``traceparent`` that makes the next node's spans children of ``span``."""
        context = span.get_span_context()
        return format_traceparent(context.trace_id, context.span_id, int(context.trace_flags))

    def remote_parent(self, traceparent: str) -> Span | None:
        """A stand-in for the span ``traceparent`` names (None when it is not valid).

        Spans started under it join that trace; its sampled flag decides
        whether they are recorded.
        """
        parsed = parse_traceparent(traceparent)
        if parsed is None:
            return None
        trace_id, span_id, flags = parsed
        context = self._span_context(trace_id, span_id, True, self._flags(flags & 0xFF))
        return self._stand_in(context)

    # -- lifecycle -----------------------------------------------------------------

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter (blocks: see :func:`close_tracing`)."""
        self.provider.shutdown()


def build_tracing(
    settings: TracingSettings, node_id: str, *, out: TextIO | None = None
) -> Tracing | None:
    """The node's :class:`Tracing` for ``[tracing]``; None when ``exporter`` is "none".

    ``console`` writes each span as one line of the SDK's JSON to ``out``
    (stdout by default) as it ends; ``otlp`` exports OTLP/HTTP protobuf to
    ``settings.endpoint`` in batches, from the SDK's background thread.
    ``sample_ratio`` picks the messages traced (:meth:`Tracing.sample`); a
    message from another node is traced when its ``traceparent`` says so.
    """
    if settings.exporter == "none":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    resource = Resource.create(
        {
            "service.name": settings.service_name,
            "service.instance.id": node_id,
            "service.version": __version__,
        }
    )
    provider = TracerProvider(
        # Every root: Tracing applies sample_ratio itself, before the SDK is asked.
        sampler=ParentBased(ALWAYS_ON),
        resource=resource,
    )
    processor: SpanProcessor
    if settings.exporter == "console":
        processor = SimpleSpanProcessor(
            ConsoleSpanExporter(
                out=out if out is not None else sys.stdout,
                formatter=lambda span: span.to_json(indent=None) + "\n",
            )
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint))
    provider.add_span_processor(processor)
    return Tracing(provider, settings.sample_ratio)


async def close_tracing(tracing: Tracing | None) -> None:
    """Flush and stop ``tracing`` (nothing when None), off the event loop.

    The exporter may wait for the collector (up to its timeout): the loop
    goes on meanwhile.
    """
    if tracing is not None:
        await asyncio.to_thread(tracing.shutdown)


def use_tracing(ctx: NodeContext, tracing: Tracing | None) -> None:
    """Make ``tracing`` the node's (before its actors start)."""
    if tracing is None:
        ctx.extra.pop(TRACING_KEY, None)
    else:
        ctx.extra[TRACING_KEY] = tracing


def tracing_of(ctx: NodeContext) -> Tracing | None:
    """The node's :class:`Tracing`; None when tracing is off."""
    found: Any = ctx.extra.get(TRACING_KEY)
    return found if isinstance(found, Tracing) else None
