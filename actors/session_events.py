"""What happens around a session when its connection comes and goes.

Shared by the connection actor (a socket closed) and the connection
supervisor (a connection actor crashed): detaching the session, writing it
behind to the shared store, and keeping presence right.
"""

from __future__ import annotations

from thespian.actors import ActorTypeDispatcher

from rtcs.actors.context import ROUTE_ROOM, NodeContext
from rtcs.actors.messages import SessionPresence
from rtcs.backends.base import SessionSnapshot
from rtcs.sessions import Session


def release_connection(
    ctx: NodeContext, actor: ActorTypeDispatcher, connection_id: str, user: str | None
) -> None:
    """A connection is gone (closed, or its actor crashed): tidy up after it.

    Detaches its session if it still holds one (the session stays resumable
    for its TTL; taken-over sessions have moved on already), tells the room
    handler so room presence follows, and removes the connection from the
    user's presence. Safe to call twice.
    """
    session = ctx.sessions.by_connection(connection_id)
    if session is not None:
        ctx.sessions.detach(session, ctx.clock())
        if ctx.write_behind is not None:
            # Other nodes may resume it: store it, then every message it buffers.
            # The save is owner-checked: refused when another node took the
            # session over meanwhile (the write-behind then reports it moved).
            ctx.write_behind.save(snapshot(ctx, session), ctx.settings.session.ttl)
            session.mirror = ctx.write_behind.note
        announce_presence(ctx, actor, session, online=False)
    if user is not None:
        ctx.background.submit(ctx.backends.presence.remove_connection, user, connection_id)


def mirror_attached(ctx: NodeContext, session: Session, *, take_over: bool) -> None:
    """Save a just-attached session and mirror it from now on (``session.crash_safe``).

    Every delivery is then noted in the write-behind, and a change of its
    subscriptions or rooms saves it again (the snapshot taken at the change).
    ``take_over`` after a claim: the stored record may still name the node
    the session came from. Nothing happens without a crash-safe write-behind.
    """
    write_behind = ctx.write_behind
    if write_behind is None or not write_behind.crash_safe:
        return
    ttl = ctx.settings.session.ttl

    def changed(changed_session: Session) -> None:
        write_behind.save(snapshot(ctx, changed_session), ttl)

    write_behind.save(snapshot(ctx, session), ttl, take_over=take_over)
    session.mirror = write_behind.note_attached
    session.on_change = changed


def snapshot(ctx: NodeContext, session: Session) -> SessionSnapshot:
    """The shareable state of a session, owned by this node."""
    return SessionSnapshot(
        session_id=session.id,
        user=session.user,
        subscriptions=tuple(session.subscriptions),
        rooms=tuple(session.rooms),
        seq=session.seq,
        buffer=tuple(session.buffer),
        node=ctx.node_id,
        receipts=session.receipt_state(),
    )


def announce_presence(
    ctx: NodeContext, actor: ActorTypeDispatcher, session: Session, *, online: bool
) -> None:
    """Tell the room handler that a session went online/offline (room presence)."""
    if not session.rooms:
        return
    address = ctx.directory.lookup(ROUTE_ROOM)
    if address is not None:
        actor.send(address, SessionPresence(session, online))
