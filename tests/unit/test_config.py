"""Tests for rtcs.config: precedence, validation, and conf/rtcs.toml."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rtcs import config, logs, metrics
from rtcs.config import Settings, SupervisorSettings, devsecret, load, sources
from rtcs.errors import ConfigError
from rtcs.protocol.codec import DEFAULT_MAX_DEPTH
from rtcs.runtime.policy import Strategy

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf" / "rtcs.toml"
SECRET = "s" * 32


def write(tmp_path: Path, text: str, name: str = "rtcs.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def public_key_file(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "public.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


# --- defaults and the shipped file -------------------------------------------------


def test_defaults() -> None:
    settings = load()
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8765
    assert settings.server.allowed_origins == ()
    assert settings.auth.algorithms == ("HS256",)
    assert settings.limits.max_message_size == 65536
    assert settings.limits.rate == 100.0
    assert settings.session.ttl == 120.0
    assert settings.heartbeat.interval == 25.0
    assert settings.backend.kind == "memory"
    assert settings.supervision.connections == SupervisorSettings("one_for_one", 100, 1.0)
    assert settings.supervision.server == SupervisorSettings("rest_for_one", 3, 5.0)
    assert settings.log.level == "info"
    assert settings.rbac["roles"]["*"]["publish_deny"] == ["system.>"]


def test_shipped_file_equals_defaults() -> None:
    assert load(CONF) == load()
    assert load(CONF).as_dict() == load().as_dict()


def test_shipped_file_names_every_field() -> None:
    document = tomllib.loads(CONF.read_text())
    for section, cls in sources.SECTIONS.items():
        if cls is config.SupervisionSettings:
            for sup in dataclasses.fields(cls):
                keys = {f.name for f in dataclasses.fields(SupervisorSettings)}
                assert set(document[section][sup.name]) == keys
        else:
            keys = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
            assert set(document[section]) == keys, section
    assert set(document) == {*sources.SECTIONS, "rbac", "plugins"}


def test_as_dict_is_json_and_redacts() -> None:
    settings = load(overrides={"auth.secret": SECRET})
    assert json.loads(json.dumps(settings.as_dict()))["auth"]["secret"] == SECRET
    assert settings.as_dict(redact=True)["auth"]["secret"] == "***"
    assert SECRET not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server.port = 1  # type: ignore[misc]


# --- precedence ----------------------------------------------------------------------


def test_file_env_overrides_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nport = 9001\nhost = "localhost"\n[limits]\nrate = 5\nburst = 7\n'
        '[log]\nlevel = "warning"\n',
    )
    env = {"RTCS_SERVER_PORT": "9002", "RTCS_LIMITS_RATE": "50.5"}
    settings = load(path, environ=env, overrides={"server.port": 0})
    assert settings.server.port == 0  # overrides beat env
    assert settings.server.host == "localhost"  # file beats defaults
    assert settings.limits.rate == 50.5  # env beats file
    assert settings.limits.burst == 7
    assert settings.log.level == "warning"
    assert load(path, environ=env).server.port == 9002


def test_env_parsing_of_each_type() -> None:
    env = {
        "RTCS_SERVER_ALLOWED_ORIGINS": "https://a.example, http://b.example:8080",
        "RTCS_AUTH_ALLOW_QUERY_TOKEN": "no",
        "RTCS_METRICS_ENABLED": "0",
        "RTCS_HEARTBEAT_TIMEOUT": "3",
        "RTCS_LIMITS_MAX_ROOMS": "12",
        "RTCS_SERVER_NODE_ID": "node-a",
        "RTCS_SUPERVISION_ROUTER_STRATEGY": "one_for_one",
        "RTCS_LOG_LEVEL": "DEBUG",
        "RTCS_CONFIG": "/not/a/setting",  # not a section: left alone
        "PATH": "/usr/bin",  # not RTCS_*: left alone
    }
    settings = load(environ=env)
    assert settings.server.allowed_origins == ("https://a.example", "http://b.example:8080")
    assert settings.auth.allow_query_token is False
    assert settings.metrics.enabled is False
    assert settings.heartbeat.timeout == 3.0
    assert settings.limits.max_rooms == 12
    assert settings.server.node_id == "node-a"
    assert settings.supervision.router.strategy == "one_for_one"
    assert settings.log.level == "debug"


def test_jwt_secret_alias() -> None:
    settings = load(environ={"RTCS_JWT_SECRET": SECRET, "RTCS_SERVER_HOST": "0.0.0.0"})
    assert settings.auth.secret == SECRET
    assert not settings.auth.using_dev_secret


def test_conflicting_secret_alias_is_an_error_without_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        load(environ={"RTCS_JWT_SECRET": SECRET, "RTCS_AUTH_SECRET": "t" * 32})
    assert info.value.key == "RTCS_JWT_SECRET"
    assert SECRET not in str(info.value)


def test_string_overrides_are_parsed() -> None:
    settings = load(overrides={"server.port": "0", "metrics.enabled": "false"})
    assert settings.server.port == 0
    assert settings.metrics.enabled is False


def test_with_overrides_revalidates() -> None:
    settings = load()
    changed = settings.with_overrides({"server.port": 0}, **{"log.format": "console"})
    assert (changed.server.port, changed.log.format) == (0, "console")
    assert settings.server.port == 8765
    with pytest.raises(ConfigError) as info:
        settings.with_overrides(**{"limits.burst": 0})
    assert info.value.key == "limits.burst"


# --- bad values name the key and the value ---------------------------------------------


@pytest.mark.parametrize(
    ("env", "key", "value"),
    [
        ({"RTCS_SERVER_PORT": "eighty"}, "RTCS_SERVER_PORT", "eighty"),
        ({"RTCS_SERVER_PORT": "70000"}, "RTCS_SERVER_PORT", 70000),
        ({"RTCS_LIMITS_RATE": "fast"}, "RTCS_LIMITS_RATE", "fast"),
        ({"RTCS_LIMITS_RATE": "nan"}, "RTCS_LIMITS_RATE", "nan"),
        ({"RTCS_LIMITS_BURST": "-1"}, "RTCS_LIMITS_BURST", -1),
        ({"RTCS_METRICS_ENABLED": "maybe"}, "RTCS_METRICS_ENABLED", "maybe"),
        ({"RTCS_SERVER_PROT": "1"}, "RTCS_SERVER_PROT", "1"),
        ({"RTCS_RBAC_ROLES": "x"}, "RTCS_RBAC_ROLES", "x"),
    ],
)
def test_bad_env_values_name_the_variable(env: dict[str, str], key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load(environ=env)
    assert (info.value.key, info.value.value) == (key, value)
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("toml", "key", "value"),
    [
        ("[server]\nport = -1", "server.port", -1),
        ("[server]\nport = 65536", "server.port", 65536),
        ('[server]\nport = "80"', "server.port", "80"),
        ("[server]\nport = 80.0", "server.port", 80.0),
        ("[server]\nworkers = 0", "server.workers", 0),
        ('[server]\npath = "ws"', "server.path", "ws"),
        (
            '[server]\nallowed_origins = "https://a.example"',
            "server.allowed_origins",
            "https://a.example",
        ),
        (
            '[server]\nallowed_origins = ["https://a.example/app"]',
            "server.allowed_origins",
            "https://a.example/app",
        ),
        ('[server]\ntls_cert = "/nonexistent/cert.pem"', "server.tls_key", ""),
        ('[server]\nhost = ""', "server.host", ""),
        ("[limits]\nmax_message_size = 0", "limits.max_message_size", 0),
        ("[limits]\nrate = true", "limits.rate", True),
        ("[session]\nttl = 0", "session.ttl", 0.0),
        ("[heartbeat]\ninterval = -5", "heartbeat.interval", -5.0),
        ("[auth]\nmax_token_bytes = 0", "auth.max_token_bytes", 0),
        ("[auth]\nleeway = -1", "auth.leeway", -1.0),
        ("[auth]\nmax_token_lifetime = 0", "auth.max_token_lifetime", 0.0),
        ('[auth]\nalgorithms = ["none"]', "auth.algorithms", "none"),
        ("[auth]\nalgorithms = []", "auth.algorithms", []),
        ('[auth]\nalgorithms = ["HS256", "RS256"]', "auth.algorithms", ["HS256", "RS256"]),
        ('[auth]\ncookie_name = "a;b"', "auth.cookie_name", "a;b"),
        ("[auth]\nallow_query_token = 1", "auth.allow_query_token", 1),
        ('[backend]\nkind = "mongo"', "backend.kind", "mongo"),
        ('[backend]\nredis_url = "http://x"', "backend.redis_url", "http://x"),
        (
            '[supervision.router]\nstrategy = "restart_all"',
            "supervision.router.strategy",
            "restart_all",
        ),
        ("[supervision.router]\nmax_restarts = -1", "supervision.router.max_restarts", -1),
        ("[supervision.router]\nwithin = 0", "supervision.router.within", 0.0),
        ("[supervision.routers]\nwithin = 1", "supervision.routers", {"within": 1}),
        ("[supervision.router]\nwithinn = 1", "supervision.router.withinn", 1),
        ('[log]\nlevel = "loud"', "log.level", "loud"),
        ('[log]\nformat = "xml"', "log.format", "xml"),
        ('[metrics]\npath = "/ws"', "metrics.path", "/ws"),
        ("[server]\nprot = 1", "server.prot", 1),
        ("[sever]\nport = 1", "sever", {"port": 1}),
        ("rbac = 3", "rbac", 3),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, toml: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, toml))
    assert (info.value.key, info.value.value) == (key, value)


def test_bad_rbac_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "[rbac]\nrole = {}"))
    assert info.value.key.startswith("rbac.role")


def test_report_interval_must_not_be_shorter_than_sample_interval(tmp_path: Path) -> None:
    path = write(tmp_path, "[metrics]\nsample_interval = 5.0\nreport_interval = 2.0\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert (info.value.key, info.value.value) == ("metrics.report_interval", 2.0)
    with pytest.raises(ConfigError) as info:
        load(environ={"RTCS_METRICS_REPORT_INTERVAL": "0.5"})
    assert info.value.key == "RTCS_METRICS_REPORT_INTERVAL"
    equal = load(overrides={"metrics.sample_interval": 2, "metrics.report_interval": 2})
    assert equal.metrics.report_interval == equal.metrics.sample_interval == 2.0


def test_byte_burst_must_hold_a_maximal_message(tmp_path: Path) -> None:
    defaults = load().limits
    assert (defaults.byte_rate, defaults.byte_burst) == (262144.0, 1048576)
    path = write(tmp_path, "[limits]\nmax_message_size = 2048\nbyte_burst = 2047\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert (info.value.key, info.value.value) == ("limits.byte_burst", 2047)
    assert "limits.max_message_size" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load(environ={"RTCS_LIMITS_BYTE_BURST": "65535"})
    assert (info.value.key, info.value.value) == ("RTCS_LIMITS_BYTE_BURST", 65535)
    env = {"RTCS_LIMITS_BYTE_RATE": "1.5", "RTCS_LIMITS_BYTE_BURST": "65536"}
    equal = load(environ=env).limits
    assert (equal.byte_rate, equal.byte_burst) == (1.5, 65536)
    with pytest.raises(ConfigError) as info:
        load(environ={"RTCS_LIMITS_BYTE_RATE": "0"})
    assert info.value.key == "RTCS_LIMITS_BYTE_RATE"


def test_redis_backend_settings() -> None:
    settings = load(
        overrides={"backend.kind": "redis", "backend.redis_url": "redis+cluster://127.0.0.1:7000"}
    )
    assert (settings.backend.kind, settings.backend.redis_shards) == ("redis", 16)
    assert settings.breaker.failure_threshold == 5


@pytest.mark.parametrize(
    "key, value",
    [
        ("backend.kind", "etcd"),
        ("backend.redis_url", "http://127.0.0.1"),
        ("backend.redis_prefix", "a{b}"),
        ("backend.redis_shards", "0"),
        ("backend.node_ttl", "5"),
        ("breaker.failure_threshold", "0"),
        ("breaker.timeout", "-1"),
    ],
)
def test_bad_backend_and_breaker_values_name_their_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(overrides={key: value})
    assert info.value.key == key


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError) as info:
        load(overrides={"server.prot": 1})
    assert info.value.key == "server.prot"


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "absent.toml")
    assert info.value.key == "config file"
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[server\nport = 1"))


# --- the timing and buffer settings that used to be constants ------------------------

# dotted key -> (default, another valid value); the defaults are the values the
# gateway and actors hard-coded before they became settings.
TUNABLES: dict[str, tuple[float, float]] = {
    "server.open_timeout": (5.0, 7.5),
    "server.close_timeout": (2.0, 0.25),
    "server.watchdog_interval": (0.5, 0.1),
    "limits.ws_max_queue": (64, 16),
    "limits.held_frames": (64, 8),
    "session.reap_interval": (1.0, 0.2),
    "metrics.sample_interval": (1.0, 0.5),
    "metrics.report_interval": (60.0, 30.0),
}


def _get(settings: Settings, dotted: str) -> object:
    section, key = dotted.split(".")
    return getattr(getattr(settings, section), key)


def _env_var(dotted: str) -> str:
    return f"RTCS_{dotted.replace('.', '_').upper()}"


@pytest.mark.parametrize(("dotted", "values"), TUNABLES.items())
def test_tunable_default_file_and_env(
    tmp_path: Path, dotted: str, values: tuple[float, float]
) -> None:
    default, other = values
    assert _get(load(), dotted) == default
    assert type(_get(load(), dotted)) is type(default)
    section, key = dotted.split(".")
    assert _get(load(write(tmp_path, f"[{section}]\n{key} = {other}\n")), dotted) == other
    assert _get(load(environ={_env_var(dotted): str(other)}), dotted) == other


@pytest.mark.parametrize("dotted", TUNABLES)
@pytest.mark.parametrize("bad", [0, -1])
def test_tunable_must_be_positive(tmp_path: Path, dotted: str, bad: int) -> None:
    section, key = dotted.split(".")
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, f"[{section}]\n{key} = {bad}\n"))
    assert (info.value.key, info.value.value) == (dotted, bad)
    with pytest.raises(ConfigError) as info:
        load(environ={_env_var(dotted): str(bad)})
    assert (info.value.key, info.value.value) == (_env_var(dotted), bad)


@pytest.mark.parametrize("dotted", ["limits.ws_max_queue", "limits.held_frames"])
def test_frame_counts_are_integers(tmp_path: Path, dotted: str) -> None:
    section, key = dotted.split(".")
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, f"[{section}]\n{key} = 64.0\n"))
    assert (info.value.key, info.value.value) == (dotted, 64.0)
    with pytest.raises(ConfigError) as info:
        load(environ={_env_var(dotted): "1.5"})
    assert (info.value.key, info.value.value) == (_env_var(dotted), "1.5")


# --- one vocabulary ------------------------------------------------------------------


def test_vocabularies_come_from_their_owners() -> None:
    assert {s.value for s in Strategy} == config.STRATEGIES
    assert set(logs.LEVELS) == config.LOG_LEVELS
    assert set(logs.FORMATS) == config.LOG_FORMATS
    assert load().limits.max_json_depth == DEFAULT_MAX_DEPTH


def test_supervisor_names_are_the_supervision_fields_in_start_order() -> None:
    names = tuple(f.name for f in dataclasses.fields(config.SupervisionSettings))
    assert names == ("system", "server", "connections", "router", "metrics", "plugins")
    assert names == config.SUPERVISORS
    assert names == metrics.SUPERVISORS
    assert tuple(s.value for s in Strategy) == metrics.RESTART_STRATEGIES


def test_every_log_level_the_logger_knows_is_accepted() -> None:
    for level in logs.LEVELS:
        assert load(environ={"RTCS_LOG_LEVEL": level.upper()}).log.level == level


# --- auth: secrets and keys ----------------------------------------------------------


def test_dev_secret_on_loopback(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    path = tmp_path / "rtcs" / "dev-secret"
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        auth = load(environ=env, overrides={"server.host": host}).auth
        assert auth.secret == path.read_text().strip()
        assert len(auth.secret) >= 64
        assert auth.using_dev_secret
        assert auth.dev_secret_file == str(path)
        assert "rtcs-insecure" not in auth.secret


def test_dev_secret_file_setting(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "secret"
    auth = load(environ={"RTCS_AUTH_DEV_SECRET_FILE": str(path)}).auth
    assert auth.using_dev_secret and auth.secret == path.read_text().strip()
    path.chmod(0o640)
    with pytest.raises(ConfigError) as info:
        load(environ={"RTCS_AUTH_DEV_SECRET_FILE": str(path)})
    assert (info.value.key, info.value.value) == ("RTCS_AUTH_DEV_SECRET_FILE", str(path))
    with pytest.raises(ConfigError) as info:
        load(overrides={"auth.dev_secret_file": str(path)})
    assert info.value.key == "auth.dev_secret_file"


def test_configured_secret_never_touches_the_dev_secret_file(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path), "RTCS_JWT_SECRET": SECRET}
    auth = load(environ=env).auth
    assert auth.secret == SECRET and not auth.using_dev_secret and auth.dev_secret_file == ""
    assert not (tmp_path / "rtcs").exists()


def test_default_dev_secret_location() -> None:
    assert devsecret.default_path({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == "/s/rtcs/dev-secret"
    assert devsecret.default_path({"HOME": "/h"}) == "/h/.local/state/rtcs/dev-secret"
    # A relative XDG_STATE_HOME is invalid (XDG base directory spec): ignored.
    assert devsecret.default_path({"XDG_STATE_HOME": "s", "HOME": "/h"}).startswith("/h/")


def test_no_secret_on_public_host_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load(environ={"RTCS_SERVER_HOST": "0.0.0.0"})
    assert info.value.key == "auth.secret"
    assert info.value.value == ""
    assert "RTCS_JWT_SECRET" in info.value.reason


def test_dev_secret_can_be_disabled_on_loopback() -> None:
    with pytest.raises(ConfigError) as info:
        load(overrides={"auth.dev_secret_on_loopback": False})
    assert info.value.key == "auth.secret"


def test_with_overrides_keeps_the_dev_secret() -> None:
    settings = load()
    changed = settings.with_overrides({"server.port": 0})
    assert changed.auth == settings.auth and changed.auth.using_dev_secret


def test_dev_secret_is_refused_when_moving_to_a_public_host() -> None:
    with pytest.raises(ConfigError, match="development secret"):
        load().with_overrides({"server.host": "0.0.0.0"})


def test_short_secret_is_an_error_without_showing_it() -> None:
    with pytest.raises(ConfigError) as info:
        load(overrides={"auth.secret": "short-secret"})
    assert info.value.key == "auth.secret"
    assert "short-secret" not in str(info.value)
    with pytest.raises(ConfigError, match="64 bytes for HS512"):
        load(overrides={"auth.secret": SECRET, "auth.algorithms": "HS256,HS512"})


def test_rs256_needs_a_readable_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(overrides={"auth.algorithms": "RS256"})
    assert info.value.key == "auth.public_key_file"
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError) as info:
        load(environ={"RTCS_AUTH_ALGORITHMS": "RS256", "RTCS_AUTH_PUBLIC_KEY_FILE": missing})
    assert (info.value.key, info.value.value) == ("RTCS_AUTH_PUBLIC_KEY_FILE", missing)


def test_rs256_with_public_key(tmp_path: Path) -> None:
    pem = public_key_file(tmp_path)
    path = write(
        tmp_path,
        f'[server]\nhost = "0.0.0.0"\n[auth]\nalgorithms = ["RS256"]\npublic_key_file = "{pem}"\n',
    )
    settings = load(path)
    assert settings.auth.algorithms == ("RS256",)
    assert settings.auth.secret == ""
    assert not settings.auth.using_dev_secret


# --- rbac ----------------------------------------------------------------------------


def test_file_rbac_replaces_the_default(tmp_path: Path) -> None:
    path = write(tmp_path, '[rbac.roles.user]\nsubscribe = ["chat.>"]\npublish = ["chat.>"]\n')
    rbac = load(path).rbac
    assert set(rbac["roles"]) == {"user"}


def test_default_rbac_is_a_private_copy() -> None:
    first = load()
    first.rbac["roles"]["*"]["publish"].append("mutated")
    assert "mutated" not in load().rbac["roles"]["*"]["publish"]


def test_default_settings_object_matches_load_except_secret() -> None:
    assert dataclasses.replace(load(), auth=Settings().auth) == Settings()


def test_reference_documents_every_key() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    assert "## `[rbac]`" in text
    assert "## `[plugins]`" in text
    for dotted in set(sources.SCHEMA) - {"rbac", "plugins"}:
        key = dotted.rsplit(".", 1)[-1]
        assert f"`{key}`" in text, dotted
        if not dotted.startswith("supervision."):
            assert f"RTCS_{dotted.replace('.', '_').upper()}" in text, dotted


def test_metrics_worker_port() -> None:
    assert load().metrics.worker_port == 0
    settings = load(
        environ={"RTCS_METRICS_WORKER_PORT": "9100"},
        overrides={"server.workers": 4, "server.port": 8765},
    )
    assert settings.metrics.worker_port == 9100


@pytest.mark.parametrize(
    "overrides",
    [
        {"metrics.worker_port": -1},
        {"metrics.worker_port": 65536},
        {"metrics.worker_port": 65535, "server.workers": 2},  # 65536 for worker 1
        {"metrics.worker_port": 8764, "server.workers": 2, "server.port": 8765},
    ],
)
def test_bad_metrics_worker_port_names_the_key(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        load(overrides=overrides)
    assert info.value.key == "metrics.worker_port"
