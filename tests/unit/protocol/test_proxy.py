"""The PROXY protocol v2 header parser and the trusted-proxy rules (pure)."""

from __future__ import annotations

import pytest

from rtcs.protocol.proxy import (
    MAX_HEADER,
    SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    TrustedProxies,
    Verdict,
    build,
    parse,
)

REQUEST = b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"


def header(version_command: int, family_transport: int, body: bytes) -> bytes:
    return (
        SIGNATURE + bytes((version_command, family_transport)) + len(body).to_bytes(2, "big") + body
    )


def test_ipv4_header_gives_the_client_and_its_length() -> None:
    raw = build(("203.0.113.7", 51000), ("10.0.0.1", 8765))
    found = parse(raw + REQUEST)
    assert found == ProxyHeader(28, ("203.0.113.7", 51000), ("10.0.0.1", 8765))
    assert (raw + REQUEST)[found.length :] == REQUEST


def test_ipv6_header() -> None:
    raw = build(("2001:db8::7", 443), ("2001:db8::1", 8765))
    found = parse(raw)
    assert isinstance(found, ProxyHeader)
    assert found.length == 16 + 36
    assert found.source == ("2001:db8::7", 443)
    assert found.destination == ("2001:db8::1", 8765)


def test_local_command_carries_no_address() -> None:
    # HAProxy's own health checks: the connection's peer address stands.
    assert parse(build(None)) == ProxyHeader(16, None)
    # LOCAL with an address block: the block is skipped, not believed.
    raw = header(0x20, 0x11, bytes(12))
    assert parse(raw + REQUEST) == ProxyHeader(28, None)


def test_unspec_and_unix_families_carry_no_address() -> None:
    assert parse(header(0x21, 0x00, b"")) == ProxyHeader(16, None)
    assert parse(header(0x21, 0x31, bytes(216))) == ProxyHeader(16 + 216, None)


def test_tlvs_after_the_addresses_are_skipped() -> None:
    tlvs = bytes((0x01, 0x00, 0x02)) + b"h2" + bytes((0x04, 0x00, 0x00))  # ALPN, NOOP
    raw = build(("198.51.100.1", 1), ("198.51.100.2", 2), tlvs=tlvs)
    found = parse(raw + REQUEST)
    assert isinstance(found, ProxyHeader)
    assert found.source == ("198.51.100.1", 1)
    assert found.length == len(raw)


def test_truncated_headers_ask_for_more_bytes() -> None:
    raw = build(("203.0.113.7", 1), ("10.0.0.1", 2), tlvs=b"\x04\x00\x01x")
    for cut in range(1, len(raw)):
        assert parse(raw[:cut]) is Verdict.INCOMPLETE, cut
    assert isinstance(parse(raw), ProxyHeader)
    assert parse(b"") is Verdict.INCOMPLETE


def test_other_bytes_are_not_a_header() -> None:
    assert parse(REQUEST) is Verdict.ABSENT
    assert parse(b"\r\n\r\nX") is Verdict.ABSENT  # wrong signature
    assert parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n") is Verdict.ABSENT  # version 1: not ours
    wrong = bytearray(build(("1.2.3.4", 1)))
    wrong[11] ^= 0xFF
    assert parse(bytes(wrong)) is Verdict.ABSENT


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (header(0x11, 0x11, bytes(12)), "version 1"),
        (header(0x31, 0x11, bytes(12)), "version 3"),
        (header(0x22, 0x11, bytes(12)), "command 2"),
        (header(0x21, 0x41, bytes(12)), "family 4"),
        (header(0x21, 0xF1, bytes(12)), "family 15"),
        (header(0x21, 0x11, bytes(8)), "too short"),
        (header(0x21, 0x21, bytes(12)), "too short"),
    ],
)
def test_malformed_headers_are_errors_that_never_quote_the_bytes(raw: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message) as info:
        parse(raw)
    assert "\\x" not in str(info.value)


def test_the_longest_header_is_bounded() -> None:
    raw = header(0x21, 0x11, bytes(0xFFFF))
    assert len(raw) == MAX_HEADER
    assert parse(raw[:-1]) is Verdict.INCOMPLETE
    assert isinstance(parse(raw), ProxyHeader)


def test_trusted_proxies_match_addresses_and_networks() -> None:
    trusted = TrustedProxies(("127.0.0.2", "10.0.0.0/8", "2001:db8::/32"))
    assert trusted
    assert not TrustedProxies(())
    assert trusted.trusts("127.0.0.2")
    assert not trusted.trusts("127.0.0.1")
    assert trusted.trusts("10.20.30.40")
    assert trusted.trusts("::ffff:10.0.0.1")  # IPv4-mapped, as dual-stack sockets report
    assert trusted.trusts("2001:db8::5")
    assert not trusted.trusts("unknown")


def test_forwarded_for_is_believed_only_from_trusted_peers() -> None:
    trusted = TrustedProxies(("127.0.0.2", "10.0.0.0/8"))
    # The right-most address that is not itself a trusted proxy.
    assert trusted.client("127.0.0.2", "198.51.100.9, 203.0.113.7, 10.0.0.3") == "203.0.113.7"
    assert trusted.client("127.0.0.2", "203.0.113.7") == "203.0.113.7"
    # Not from a trusted peer: ignored (a client can write any header).
    assert trusted.client("127.0.0.1", "203.0.113.7") == "127.0.0.1"
    assert trusted.client("127.0.0.2", None) == "127.0.0.2"
    # Every hop trusted: the left-most.
    assert trusted.client("127.0.0.2", "10.0.0.9, 10.0.0.3") == "10.0.0.9"
    # Garbage stops the walk at the last trusted hop.
    assert trusted.client("127.0.0.2", "203.0.113.7, not-an-ip") == "127.0.0.2"
    assert trusted.client("127.0.0.2", "evil, 10.0.0.3") == "10.0.0.3"
    assert trusted.client("127.0.0.2", " 2001:DB8::1 ") == "2001:db8::1"
