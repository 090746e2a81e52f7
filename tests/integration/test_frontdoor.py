"""The front door, black-box: trusted proxies (PROXY v2, X-Forwarded-For) and
the caps on sockets that have not authenticated yet.

Every 127/8 address is loopback, so a client socket bound to 127.0.0.2 is a
second peer: trusted when the node trusts 127.0.0.2, and 127.0.0.1 is not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from rtcs.protocol.proxy import SIGNATURE, build
from tests.integration.conftest import TIMEOUT, Client, Node, metric
from tests.support import processes, wait_until

HEADER = "rtcs_handshakes_rejected_total"


def peers(node: Node) -> list[str]:
    gateway = node.app.gateway
    assert gateway is not None
    return sorted(handle.peer for handle in gateway.handles)


async def raw_socket(node: Node, local: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((local, 0))
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.app.port))
    return sock


async def proxied(
    node: Node, header: bytes, *, local: str = "127.0.0.1", sub: str | None = "alice"
) -> ClientConnection:
    """A real WebSocket handshake on a socket that first wrote ``header``."""
    sock = await raw_socket(node, local)
    await asyncio.get_running_loop().sock_sendall(sock, header)
    headers = {"Authorization": f"Bearer {node.token(sub)}"} if sub else None
    return await connect(node.url, sock=sock, additional_headers=headers, open_timeout=TIMEOUT)


async def welcomed(ws: ClientConnection) -> Client:
    client = Client(ws)
    client.welcome = await client.expect("welcome")
    return client


async def dropped(sock: socket.socket) -> None:
    """Wait until the server closed or reset ``sock`` without answering."""
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 1024), TIMEOUT)
    except ConnectionResetError:
        data = b""
    finally:
        sock.close()
    assert data == b""


# -- PROXY protocol v2 ----------------------------------------------------------------


async def test_a_trusted_proxy_header_sets_the_client_address(node_factory: Any) -> None:
    node = await node_factory(**{"server.trusted_proxies": ("127.0.0.1",)})
    v4 = await welcomed(await proxied(node, build(("203.0.113.7", 50000), ("127.0.0.1", 1))))
    v6 = await welcomed(
        await proxied(node, build(("2001:db8::7", 5), ("2001:db8::1", 1)), sub="bob")
    )
    assert peers(node) == ["2001:db8::7", "203.0.113.7"]
    # Once the header is consumed, frames go straight to websockets' own
    # data_received (no per-frame check): the instance override is gone.
    gateway = node.app.gateway
    assert gateway is not None
    for handle in gateway.handles:
        connection = handle._ws
        assert "data_received" not in vars(connection)
        assert type(connection).data_received is ServerConnection.data_received
    await v4.request({"type": "ping"}, "pong")
    await v6.request({"type": "ping"}, "pong")


async def test_a_trusted_proxy_may_connect_without_a_header_or_with_local(
    node_factory: Any,
) -> None:
    # Health checks: the proxy's own address stands.
    node = await node_factory(**{"server.trusted_proxies": ("127.0.0.0/8",)})
    plain = await node.client("alice")
    local = await welcomed(await proxied(node, build(None), local="127.0.0.3", sub="bob"))
    assert peers(node) == ["127.0.0.1", "127.0.0.3"]
    await plain.request({"type": "ping"}, "pong")
    await local.request({"type": "ping"}, "pong")


async def test_a_header_split_over_several_writes_is_reassembled(node_factory: Any) -> None:
    node = await node_factory(**{"server.trusted_proxies": ("127.0.0.1",)})
    sock = await raw_socket(node)
    loop = asyncio.get_running_loop()
    raw = build(("198.51.100.4", 1), ("127.0.0.1", 2), tlvs=b"\x04\x00\x03abc")
    for piece in (raw[:5], raw[5:14], raw[14:20], raw[20:]):
        await loop.sock_sendall(sock, piece)
        await asyncio.sleep(0)  # separate segments, in all likelihood; any split must work
    headers = {"Authorization": f"Bearer {node.token('alice')}"}
    ws = await connect(node.url, sock=sock, additional_headers=headers, open_timeout=TIMEOUT)
    await welcomed(ws)
    assert peers(node) == ["198.51.100.4"]


async def test_a_header_from_an_untrusted_peer_closes_the_socket(
    node_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    node = await node_factory(**{"server.trusted_proxies": ("127.0.0.2",)})
    sock = await raw_socket(node, "127.0.0.1")
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(
        sock, build(("203.0.113.7", 1), ("127.0.0.1", 2)) + b"GET /ws HTTP/1.1\r\n"
    )
    await dropped(sock)
    await wait_until(lambda: metric(node, HEADER, status="400") == 1)
    # The node serves others, and no traceback was logged.
    client = await node.client("bob")
    await client.request({"type": "ping"}, "pong")
    # (websockets may note the missing request at debug level, with its trace.)
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]


async def test_with_no_trusted_proxies_a_header_closes_the_socket(node: Node) -> None:
    sock = await raw_socket(node)
    await asyncio.get_running_loop().sock_sendall(sock, build(("203.0.113.7", 1)))
    await dropped(sock)
    client = await node.client("bob")
    assert peers(node) == ["127.0.0.1"]
    await client.request({"type": "ping"}, "pong")


@pytest.mark.parametrize(
    "raw",
    [
        SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12),  # unknown family
        SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
        SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # too short for IPv4
    ],
    ids=["family", "version", "short"],
)
async def test_a_malformed_header_from_a_trusted_peer_closes_the_socket(
    node_factory: Any, raw: bytes
) -> None:
    node = await node_factory(**{"server.trusted_proxies": ("127.0.0.1",)})
    sock = await raw_socket(node)
    await asyncio.get_running_loop().sock_sendall(sock, raw + b"GET /ws HTTP/1.1\r\n\r\n")
    await dropped(sock)
    await (await node.client("bob")).request({"type": "ping"}, "pong")


async def test_per_address_limits_count_the_proxied_address(node_factory: Any) -> None:
    node = await node_factory(
        **{"server.trusted_proxies": ("127.0.0.1",), "limits.max_connections_per_address": 1}
    )
    first = build(("203.0.113.7", 1), ("127.0.0.1", 2))
    await welcomed(await proxied(node, first))
    # Another client behind the same proxy is another address.
    await welcomed(await proxied(node, build(("203.0.113.8", 1), ("127.0.0.1", 2)), sub="bob"))
    with pytest.raises(InvalidStatus) as refused:
        await proxied(node, first, sub="carol")
    assert refused.value.response.status_code == 429


# -- X-Forwarded-For --------------------------------------------------------------------


async def test_forwarded_for_is_believed_from_a_trusted_peer_only(node_factory: Any) -> None:
    node = await node_factory(**{"server.trusted_proxies": ("127.0.0.2", "10.0.0.0/8")})
    xff = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3"}
    headers = {"Authorization": f"Bearer {node.token('alice')}", **xff}
    trusted = await connect(
        node.url, additional_headers=headers, local_addr=("127.0.0.2", 0), open_timeout=TIMEOUT
    )
    await welcomed(trusted)
    assert peers(node) == ["203.0.113.9"]
    headers = {"Authorization": f"Bearer {node.token('bob')}", **xff}
    untrusted = await connect(node.url, additional_headers=headers, open_timeout=TIMEOUT)
    await welcomed(untrusted)
    assert peers(node) == ["127.0.0.1", "203.0.113.9"]
    await trusted.close()
    await untrusted.close()


# -- sockets that have not authenticated yet -------------------------------------------------


async def silent(node: Node, local: str = "127.0.0.1") -> ClientConnection:
    """A socket upgraded without a token that never sends its ``auth``."""
    return await connect(node.url, local_addr=(local, 0), open_timeout=TIMEOUT)


async def refused_status(node: Node, local: str = "127.0.0.1") -> int:
    with pytest.raises(InvalidStatus) as refused:
        await silent(node, local)
    return refused.value.response.status_code


async def first_frame_auth(ws: ClientConnection, token: str) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "auth", "token": token, "id": 1}))
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return frame


async def test_silent_sockets_do_not_lock_real_users_out(node_factory: Any) -> None:
    node = await node_factory(**{"limits.max_connections_per_node": 5})
    quiet = [await silent(node) for _ in range(20)]
    gateway = node.app.gateway
    assert gateway is not None
    await wait_until(lambda: len(gateway.handles) == 20)
    # A header token and a first-frame auth both get in.
    header_user = await node.client("alice")
    await header_user.request({"type": "ping"}, "pong")
    assert (await first_frame_auth(quiet[0], node.token("bob")))["type"] == "welcome"
    for ws in quiet[1:]:
        await ws.close()


async def test_the_node_cap_applies_when_a_first_frame_auth_succeeds(node_factory: Any) -> None:
    node = await node_factory(**{"limits.max_connections_per_node": 2})
    waiting = await silent(node)
    await node.client("alice")
    await node.client("bob")
    await waiting.send(json.dumps({"type": "auth", "token": node.token("carol"), "id": 1}))
    await asyncio.wait_for(waiting.wait_closed(), TIMEOUT)
    assert waiting.close_code == 4031
    # A header token: refused at admission, as before.
    with pytest.raises(ConnectionClosedError) as full:
        await node.client("dave")
    assert full.value.rcvd is not None and full.value.rcvd.code == 4031


async def test_the_pending_cap_refuses_the_next_silent_socket(node_factory: Any) -> None:
    node = await node_factory(**{"limits.max_pending_auth": 3})
    quiet = [await silent(node, f"127.0.0.{i}") for i in (1, 2, 3)]
    assert await refused_status(node, "127.0.0.4") == 429
    assert metric(node, HEADER, status="429") == 1
    # Authenticated users are not pending: they still get in.
    await (await node.client("alice")).request({"type": "ping"}, "pong")
    # One pending socket authenticates: a place is free again.
    assert (await first_frame_auth(quiet[0], node.token("bob")))["type"] == "welcome"
    await silent(node, "127.0.0.4")


async def test_the_pending_cap_per_address(node_factory: Any) -> None:
    node = await node_factory(**{"limits.max_pending_auth_per_address": 2})
    quiet = [await silent(node) for _ in range(2)]
    assert await refused_status(node) == 429
    await silent(node, "127.0.0.2")  # another address
    await (await node.client("alice")).request({"type": "ping"}, "pong")
    await quiet[0].close()
    gateway = node.app.gateway
    assert gateway is not None
    await wait_until(lambda: len(gateway.handles) == 3)
    await silent(node)  # the closed one's place is free again


# -- behind a real HAProxy with send-proxy-v2 ---------------------------------------------------


async def test_behind_haproxy_with_send_proxy_v2(
    node_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await node_factory(**{"server.trusted_proxies": ("127.0.0.1",)})
    directory = processes.temporary_directory("rtcs-frontdoor-")
    # conf/haproxy.cfg unchanged but for the option documented in
    # docs/operations.md ("Behind a proxy"); its health checks then send a
    # PROXY header too (LOCAL command), which rtcs accepts from a trusted peer.
    text = processes.HAPROXY_CFG.read_text()
    marker = "    default-server check"
    assert text.count(marker) == 1
    cfg = directory / "haproxy-send-proxy.cfg"
    cfg.write_text(text.replace(marker, "    default-server send-proxy-v2 check"))
    monkeypatch.setattr(processes, "HAPROXY_CFG", cfg)
    haproxy = processes.HaproxyProcess({"rtcs-1": node.app.port}, directory)
    try:
        await haproxy.start()
        await haproxy.wait_states({"rtcs-1": "UP"}, TIMEOUT)
        headers = {"Authorization": f"Bearer {node.token('alice')}"}
        ws = await connect(
            haproxy.url,
            additional_headers=headers,
            local_addr=("127.0.0.3", 0),
            open_timeout=TIMEOUT,
        )
        client = await welcomed(ws)
        assert peers(node) == ["127.0.0.3"]  # the client, not HAProxy
        await client.request({"type": "ping"}, "pong")
        await ws.close()
    finally:
        haproxy.stop()
        shutil.rmtree(directory, ignore_errors=True)
