"""The pure protocol core: frames, codec, topics, the connection state machine, rate limits.

Nothing in this package does I/O or reads a clock; callers pass ``now``.
"""

from rtcs.protocol.codec import (
    decode,
    encode_data,
    encode_error,
    encode_frame,
    encode_presence_event,
    encode_welcome,
    message_tail,
    with_seq,
)
from rtcs.protocol.frames import (
    Auth,
    Broadcast,
    BroadcastFilter,
    Command,
    Join,
    Leave,
    Ping,
    PresenceQuery,
    Publish,
    RequestId,
    Send,
    Subscribe,
    Unsubscribe,
)
from rtcs.protocol.ratelimit import Limit, RateLimiter, TokenBucket, Verdict
from rtcs.protocol.states import TRANSITIONS, ConnectionStateMachine, Event, State
from rtcs.protocol.topics import (
    TopicIndex,
    covers,
    is_pattern,
    matches,
    overlaps,
    validate_pattern,
    validate_topic,
)

__all__ = [
    "TRANSITIONS",
    "Auth",
    "Broadcast",
    "BroadcastFilter",
    "Command",
    "ConnectionStateMachine",
    "Event",
    "Join",
    "Leave",
    "Limit",
    "Ping",
    "PresenceQuery",
    "Publish",
    "RateLimiter",
    "RequestId",
    "Send",
    "State",
    "Subscribe",
    "TokenBucket",
    "TopicIndex",
    "Unsubscribe",
    "Verdict",
    "covers",
    "decode",
    "encode_data",
    "encode_error",
    "encode_frame",
    "encode_presence_event",
    "encode_welcome",
    "is_pattern",
    "matches",
    "message_tail",
    "overlaps",
    "validate_pattern",
    "validate_topic",
    "with_seq",
]
