"""The deployment files agree with each other: compose, Dockerfile, conf/.

No Docker engine here: docker-compose.yml is parsed and checked against the
Dockerfile, conf/rtcs.toml, conf/haproxy.cfg, conf/nginx.conf and the
Prometheus and Grafana files; HAProxy and nginx check their own configs.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from rtcs import config
from rtcs.config.sources import SCHEMA, SECTIONS
from tests.support.processes import (
    HAPROXY_CFG,
    NGINX_CONF,
    ROOT,
    haproxy_servers,
    nginx_servers,
    render_haproxy,
    render_nginx,
    require_binary,
)

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
RTCS_SERVICES = sorted(name for name, s in SERVICES.items() if s.get("build") == ".")
TOML = tomllib.loads((ROOT / "conf" / "rtcs.toml").read_text())
RTCS_PORT: int = TOML["server"]["port"]


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of each bind mount from the project."""
    found = []
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            found.append((host, container))
    return found


def _yaml(service: str, container_path: str) -> Any:
    """The YAML file the service mounts at ``container_path``."""
    for host, container in _mounts(SERVICES[service]):
        if container == container_path:
            return yaml.safe_load((ROOT / host).read_text())
    raise AssertionError(f"{service} mounts nothing at {container_path}")


def _env_key(var: str) -> str | None:
    """``RTCS_SERVER_NODE_ID`` -> ``server.node_id`` (None: not an rtcs section)."""
    section, _, key = var.removeprefix("RTCS_").lower().partition("_")
    if section not in SECTIONS:
        return None
    if section == "supervision":
        supervisor, _, key = key.partition("_")
        return f"supervision.{supervisor}.{key}"
    return f"{section}.{key}"


def test_the_services_exist() -> None:
    assert {"redis", "haproxy", "prometheus", "grafana"} <= set(SERVICES)
    assert len(RTCS_SERVICES) >= 2, "two rtcs instances built from the Dockerfile"


def test_every_mounted_file_exists() -> None:
    mounts = [m for s in SERVICES.values() for m in _mounts(s)]
    assert mounts
    for host, _ in mounts:
        assert (ROOT / host).exists(), f"{host} is mounted but not in the repository"


def test_the_rtcs_port_is_the_same_everywhere() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = re.findall(r"^EXPOSE\s+(\d+)", dockerfile, flags=re.MULTILINE)
    assert exposed == [str(RTCS_PORT)]
    for name in RTCS_SERVICES:
        assert [str(p) for p in SERVICES[name]["expose"]] == [str(RTCS_PORT)], name
        assert "RTCS_SERVER_PORT" not in SERVICES[name]["environment"]


def test_rtcs_environment_names_real_settings() -> None:
    node_ids = set()
    for name in RTCS_SERVICES:
        env: dict[str, str] = SERVICES[name]["environment"]
        for var in env:
            assert var.startswith("RTCS_"), var
            if var == "RTCS_JWT_SECRET":  # the alias of RTCS_AUTH_SECRET
                assert env[var].startswith("${RTCS_JWT_SECRET"), "the secret comes from outside"
                continue
            assert _env_key(var) in SCHEMA, f"{name}: {var} is not an rtcs setting"
        assert env["RTCS_BACKEND_KIND"] == "redis"
        assert env["RTCS_BACKEND_REDIS_URL"].startswith("redis://redis:")
        node_ids.add(env["RTCS_SERVER_NODE_ID"])
        # ... and the values load, as the image would (its ENV, a real secret).
        values = {**env, "RTCS_SERVER_HOST": "0.0.0.0", "RTCS_JWT_SECRET": "s" * 32}
        settings = config.load(ROOT / "conf" / "rtcs.toml", values)
        assert settings.backend.kind == "redis" and settings.server.port == RTCS_PORT
    assert len(node_ids) == len(RTCS_SERVICES), "every instance has its own node id"


def test_haproxy_balances_the_rtcs_services() -> None:
    text = HAPROXY_CFG.read_text()
    assert sorted(haproxy_servers(text).values()) == [f"{s}:{RTCS_PORT}" for s in RTCS_SERVICES]
    assert "/readyz" in text and "option httpchk" in text
    assert "hash-type consistent" in text
    for timeout in ("tunnel", "client-fin", "http-request"):
        assert re.search(rf"^\s*timeout {timeout}\s", text, flags=re.MULTILINE), timeout
    bind = re.search(r"^\s*bind\s+:(\d+)", text, flags=re.MULTILINE)
    assert bind is not None
    assert f"{bind.group(1)}:{bind.group(1)}" in SERVICES["haproxy"]["ports"]
    assert _mounts(SERVICES["haproxy"]) == [
        ("./conf/haproxy.cfg", "/usr/local/etc/haproxy/haproxy.cfg")
    ]


def test_nginx_balances_the_rtcs_services() -> None:
    text = NGINX_CONF.read_text()
    assert sorted(nginx_servers(text)) == [f"{s}:{RTCS_PORT}" for s in RTCS_SERVICES]
    assert "consistent;" in text and "proxy_http_version 1.1;" in text
    assert "max_fails" in text


def test_prometheus_scrapes_every_instance() -> None:
    prometheus = _yaml("prometheus", "/etc/prometheus/prometheus.yml")
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == TOML["metrics"]["path"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert sorted(targets) == [f"{s}:{RTCS_PORT}" for s in RTCS_SERVICES]


def test_grafana_uses_prometheus() -> None:
    ((host, container),) = _mounts(SERVICES["grafana"])
    assert container == "/etc/grafana/provisioning"
    files = sorted((ROOT / host / "datasources").glob("*.y*ml"))
    assert files, "no datasource provisioning"
    sources = [s for f in files for s in yaml.safe_load(f.read_text())["datasources"]]
    (prometheus,) = [s for s in sources if s["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090" and prometheus["isDefault"] is True
    assert "9090:9090" in SERVICES["prometheus"]["ports"]


def test_haproxy_accepts_its_config(tmp_path: Path) -> None:
    binary = require_binary("haproxy", "haproxy")
    shipped = subprocess.run(
        [binary, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30
    )
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    # ... and as the tests render it (addresses on 127.0.0.1).
    servers = {name: f"127.0.0.1:{9000 + i}" for i, name in enumerate(RTCS_SERVICES)}
    rendered = tmp_path / "haproxy.cfg"
    rendered.write_text(render_haproxy(HAPROXY_CFG.read_text(), "127.0.0.1:9999", servers))
    result = subprocess.run(
        [binary, "-c", "-f", str(rendered)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "WARNING" not in result.stdout + result.stderr, (
        result.stdout + result.stderr
    )


def test_nginx_accepts_its_config(tmp_path: Path) -> None:
    binary = require_binary("nginx", "nginx")
    # nginx resolves upstream names at start-up: the compose names only resolve
    # under Docker, so check the config with loopback addresses.
    text = NGINX_CONF.read_text()
    servers = {address: f"127.0.0.1:{9000 + i}" for i, address in enumerate(nginx_servers(text))}
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx(text, "127.0.0.1:9999", servers))
    (tmp_path / "logs").mkdir()
    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-e", "stderr", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
