"""PURE: the PROXY protocol version 2 header (HAProxy's ``send-proxy-v2``).

A proxy that speaks it writes one binary header before the client's bytes
(the HTTP upgrade request); the header names the client's address. Layout
(haproxy.org/download/2.9/doc/proxy-protocol.txt, section 2.2)::

    12 bytes  signature  \\r\\n\\r\\n\\0\\r\\nQUIT\\n
     1 byte   version (high nibble, must be 2) | command (low: 0 LOCAL, 1 PROXY)
     1 byte   family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) | transport (low)
     2 bytes  length of what follows, big-endian
     INET     source 4, destination 4, source port 2, destination port 2
     INET6    source 16, destination 16, source port 2, destination port 2
     UNIX     source 108, destination 108
     then     TLVs up to ``length`` (skipped: rtcs uses none)

:func:`parse` takes the bytes received so far and returns the header, or says
that more bytes are needed, or that the bytes are not a PROXY v2 header at
all; the caller does the I/O and decides whom to believe. A header of LOCAL
command (health checks from the proxy itself), or of UNSPEC or UNIX family,
carries no client address: ``source`` is then None and the connection's own
peer address stands.

:class:`TrustedProxies` decides whose word is taken: the PROXY header and
``X-Forwarded-For`` count only from a peer in ``server.trusted_proxies``.

Errors: :class:`ProxyHeaderError` (a ``ValueError``) for a header that starts
with the signature but is malformed; its message names what is wrong and
never quotes the bytes.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

__all__ = [
    "MAX_HEADER",
    "SIGNATURE",
    "ProxyHeader",
    "ProxyHeaderError",
    "TrustedProxies",
    "Verdict",
    "build",
    "parse",
]

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_FIXED = 16  # signature, version/command, family/transport, length
#: The longest header: the fixed part and the largest ``length``.
MAX_HEADER = _FIXED + 0xFFFF

_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _INET, _INET6, _UNIX = 0x0, 0x1, 0x2, 0x3
#: Address block size per family.
_ADDRESS_BYTES = {_UNSPEC: 0, _INET: 12, _INET6: 36, _UNIX: 216}


class ProxyHeaderError(ValueError):
    """The bytes start with the PROXY v2 signature but are not a valid header."""


class Verdict(enum.Enum):
    """What :func:`parse` says when it returns no header."""

    INCOMPLETE = "incomplete"  # a prefix of a PROXY v2 header: read more bytes
    ABSENT = "absent"  # the bytes do not start with a PROXY v2 header


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed header.

    ``length`` is how many bytes it took (the client's bytes follow);
    ``source`` is the client's ``(address, port)``, or None when the header
    carries none (LOCAL command, UNSPEC or UNIX family).
    """

    length: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None = None


def parse(data: bytes) -> ProxyHeader | Verdict:
    """Parse a PROXY v2 header at the start of ``data``.

    Returns the header, ``Verdict.INCOMPLETE`` while ``data`` is a proper
    prefix of one (never more than :data:`MAX_HEADER` bytes are needed), or
    ``Verdict.ABSENT`` when ``data`` does not start with the signature.

    Raises:
        ProxyHeaderError: the signature is there but the version, command,
            family or length is invalid.
    """
    head = data[: len(SIGNATURE)]
    if not SIGNATURE.startswith(head):
        return Verdict.ABSENT
    if len(data) < _FIXED:
        return Verdict.INCOMPLETE
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"unsupported PROXY protocol version {version}")
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"unknown PROXY command {command}")
    family = data[13] >> 4
    if family not in _ADDRESS_BYTES:
        raise ProxyHeaderError(f"unknown PROXY address family {family}")
    length = int.from_bytes(data[14:16], "big")
    total = _FIXED + length
    if command == _PROXY and length < _ADDRESS_BYTES[family]:
        raise ProxyHeaderError(f"PROXY header too short for its address family ({length} bytes)")
    if len(data) < total:
        return Verdict.INCOMPLETE
    if command == _LOCAL or family in (_UNSPEC, _UNIX):
        return ProxyHeader(total, None)
    block = data[_FIXED:total]
    if family == _INET:
        source = str(ipaddress.IPv4Address(block[0:4]))
        destination = str(ipaddress.IPv4Address(block[4:8]))
        ports = block[8:12]
    else:
        source = str(ipaddress.IPv6Address(block[0:16]))
        destination = str(ipaddress.IPv6Address(block[16:32]))
        ports = block[32:36]
    source_port = int.from_bytes(ports[0:2], "big")
    destination_port = int.from_bytes(ports[2:4], "big")
    return ProxyHeader(total, (source, source_port), (destination, destination_port))


def build(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None = None,
    *,
    tlvs: bytes = b"",
) -> bytes:
    """The header a proxy would send (for tests and tools): PROXY with the
    addresses' family, or LOCAL when ``source`` is None.

    Raises:
        ValueError: an address is not an IP address, or the two differ in family.
    """
    if source is None:
        return SIGNATURE + bytes((0x20, 0x00)) + len(tlvs).to_bytes(2, "big") + tlvs
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address((destination or ("0.0.0.0" if src.version == 4 else "::", 0))[0])
    dst_port = destination[1] if destination else 0
    if src.version != dst.version:
        raise ValueError("source and destination must be of the same family")
    family = _INET if src.version == 4 else _INET6
    block = src.packed + dst.packed + source[1].to_bytes(2, "big") + dst_port.to_bytes(2, "big")
    body = block + tlvs
    return SIGNATURE + bytes((0x21, (family << 4) | 0x1)) + len(body).to_bytes(2, "big") + body


class TrustedProxies:
    """The peers (``server.trusted_proxies``: addresses or CIDR networks)
    whose PROXY header and ``X-Forwarded-For`` are believed.

    Raises:
        ValueError: an entry is neither an IP address nor a network (the
            configuration is validated before, so only a bug gets here).
    """

    __slots__ = ("_networks",)

    def __init__(self, entries: tuple[str, ...] | list[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        """True when ``address`` is in one of the trusted networks (False if not an IP)."""
        if not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: ``peer``, or what a trusted ``peer`` forwarded.

        ``forwarded_for`` is the ``X-Forwarded-For`` value (several headers
        joined with ","). Walking it from the right, trusted proxies are
        skipped; the first address not trusted is the client. An entry that
        is not an IP address ends the walk at the hop to its right, and when
        every entry is trusted the left-most one is the client.
        """
        if forwarded_for is None or not self.trusts(peer):
            return peer
        client = peer
        for entry in reversed(forwarded_for.split(",")):
            candidate = entry.strip()
            try:
                candidate = str(ipaddress.ip_address(candidate))
            except ValueError:
                return client
            client = candidate
            if not self.trusts(candidate):
                return candidate
        return client
