"""TLS and keepalive, against a real node."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from tests.integration.conftest import Client, metric, wait_until


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_wss_with_a_configured_certificate(node_factory: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    node = await node_factory(**{"server.tls_cert": str(cert), "server.tls_key": str(key)})
    context = ssl.create_default_context(cafile=str(cert))
    ws = await connect(
        f"wss://localhost:{node.app.port}/ws",
        ssl=context,
        additional_headers={"Authorization": f"Bearer {node.token('alice')}"},
    )
    client = Client(ws)
    await client.expect("welcome", user="alice")
    await client.request({"type": "ping"}, "pong")


async def test_a_client_that_stops_answering_pings_is_dropped(node_factory: Any) -> None:
    node = await node_factory(**{"heartbeat.interval": 0.2, "heartbeat.timeout": 0.2})
    alive, dead = await node.client("alive"), await node.client("dead")
    dead.ws.transport.pause_reading()  # no pongs from now on
    await wait_until(lambda: metric(node, "rtcs_connections_closed_total", code="1011") == 1)
    await alive.request({"type": "ping"}, "pong")
    assert len(node.app.gateway.handles) == 1


async def test_no_compression_is_negotiated(node_factory: Any) -> None:
    # The outbox frames bytes itself ("fastlane"), which needs plain frames.
    node = await node_factory()
    client = await node.client("alice", compression="deflate")
    assert client.ws.protocol.extensions == []


async def test_frames_of_every_length_class_arrive_intact(node_factory: Any) -> None:
    node = await node_factory(**{"limits.max_message_size": 300_000})
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("sizes")
    for size in (0, 60, 125, 126, 1000, 65_535, 65_536, 200_000):
        await alice.publish("sizes", "é" + "x" * size)
        frame = await bob.expect("message", topic="sizes")
        assert frame["data"] == "é" + "x" * size


async def test_an_open_connection_keeps_no_handshake_headers(node_factory: Any) -> None:
    # Memory per idle connection (docs/performance.md): what the handshake
    # said was used in process_request; nothing keeps its headers after.
    node = await node_factory()
    client = await node.client("alice")
    gateway = node.app.gateway
    assert gateway is not None
    [handle] = [h for h in gateway.handles if h.user == "alice"]
    ws = handle._ws
    assert ws.request is not None and len(ws.request.headers) == 0
    assert ws.response is None or len(ws.response.headers) == 0
    await client.request({"type": "ping"}, "pong")  # and it still works
