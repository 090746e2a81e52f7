"""The front-door settings: trusted proxies, the echo path, pending-auth and crash limits."""

from __future__ import annotations

import pytest

from rtcs import config
from rtcs.errors import ConfigError


def test_defaults() -> None:
    settings = config.load(None, {})
    assert settings.server.trusted_proxies == ()
    assert settings.server.test_echo_path == ""
    limits = settings.limits
    assert (limits.max_pending_auth, limits.max_pending_auth_per_address) == (1000, 100)
    assert (limits.crash_threshold, limits.crash_penalty) == (3, 30.0)


def test_environment_variables() -> None:
    settings = config.load(
        None,
        {
            "RTCS_SERVER_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1,2001:db8::/32",
            "RTCS_SERVER_TEST_ECHO_PATH": "/__echo",
            "RTCS_LIMITS_MAX_PENDING_AUTH": "7",
            "RTCS_LIMITS_MAX_PENDING_AUTH_PER_ADDRESS": "2",
            "RTCS_LIMITS_CRASH_THRESHOLD": "5",
            "RTCS_LIMITS_CRASH_PENALTY": "1.5",
        },
    )
    assert settings.server.trusted_proxies == ("10.0.0.0/8", "192.0.2.1", "2001:db8::/32")
    assert settings.server.test_echo_path == "/__echo"
    limits = settings.limits
    assert (limits.max_pending_auth, limits.max_pending_auth_per_address) == (7, 2)
    assert (limits.crash_threshold, limits.crash_penalty) == (5, 1.5)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"RTCS_SERVER_TRUSTED_PROXIES": "10.0.0.0/33"}, "RTCS_SERVER_TRUSTED_PROXIES"),
        ({"RTCS_SERVER_TRUSTED_PROXIES": "proxy.example"}, "RTCS_SERVER_TRUSTED_PROXIES"),
        ({"RTCS_SERVER_TEST_ECHO_PATH": "__echo"}, "RTCS_SERVER_TEST_ECHO_PATH"),
        ({"RTCS_SERVER_TEST_ECHO_PATH": "/ws"}, "RTCS_SERVER_TEST_ECHO_PATH"),
        ({"RTCS_LIMITS_MAX_PENDING_AUTH": "0"}, "RTCS_LIMITS_MAX_PENDING_AUTH"),
        ({"RTCS_LIMITS_CRASH_THRESHOLD": "0"}, "RTCS_LIMITS_CRASH_THRESHOLD"),
        ({"RTCS_LIMITS_CRASH_PENALTY": "-1"}, "RTCS_LIMITS_CRASH_PENALTY"),
    ],
)
def test_bad_values_name_their_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config.load(None, environ)
