"""The dashboard, the alerts and the Prometheus/Alertmanager configs, checked by the real tools.

- ``promtool`` checks conf/prometheus/alerts.yml and prometheus.yml and runs
  the alerts' unit tests (alerts.test.yml); ``amtool`` checks
  conf/alertmanager/alertmanager.yml and which receiver each severity reaches.
- A real ``prometheus`` on a free port of 127.0.0.1 scrapes a real
  ``python -m rtcs`` every second (its config rendered from the shipped
  prometheus.yml): the node's samples arrive under its instance, the alerts
  load and evaluate without errors, and every query of the dashboard runs.
- A real Alertmanager from the shipped config lets a critical alert silence
  the warnings of the same instance, and only those.
- Every metric name in the dashboard's and the alerts' queries is one that a
  running node exports (read from its ``/metrics`` ``# TYPE`` lines).
- The dashboard JSON has what Grafana needs: a Prometheus datasource variable,
  the instance variable, and a datasource and queries on every panel.

The tools come from Debian's ``prometheus`` and ``prometheus-alertmanager``
packages: a missing one skips its tests, and fails them when ``CI`` is set
(``require_binary``). Processes are stopped by their PID; waits poll against
a deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import connect

from rtcs import config
from rtcs.auth.tokens import mint
from tests.integration.conftest import ENV, TIMEOUT, Client
from tests.support.children import die_with_parent, stop
from tests.support.processes import ROOT, RtcsProcess, require_binary, temporary_directory
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until_returns

DASHBOARD = ROOT / "conf" / "grafana" / "rtcs.json"
PROMETHEUS_DIR = ROOT / "conf" / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
ALERTMANAGER_YML = ROOT / "conf" / "alertmanager" / "alertmanager.yml"
RULES_EXAMPLE = ROOT / "conf" / "rules.example.toml"
OPERATIONS = ROOT / "docs" / "operations.md"
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

SECRET = "ops-tools-test-secret-of-32-bytes!"
AUTH = config.load(None, {"RTCS_JWT_SECRET": SECRET}).auth
TOOL_TIMEOUT = 60.0  # seconds for one promtool/amtool run
START_TIMEOUT = 15.0  # seconds for Prometheus or Alertmanager to be ready
SCRAPE_TIMEOUT = 30.0  # seconds for scraped samples to be queryable
POLL = 0.1  # seconds between two queries of a polled condition
SEVERITIES = ("critical", "warning")

# A metric name in a PromQL expression (crude, but rtcs's and the process
# collector's names are all there is to find).
METRIC_NAME = re.compile(r"\b(rtcs_[a-z0-9_]+|process_[a-z0-9_]+)\b")
# Grafana's variables, replaced by values a plain PromQL query accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
# The sample names each exposition ``# TYPE`` stands for (text format 0.0.4,
# where a counter's family already ends in _total, and OpenMetrics, where it
# does not; both write histograms and summaries by their base name).
SAMPLE_SUFFIXES = {
    "counter": ("", "_total"),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


# -- pure helpers ---------------------------------------------------------------------


def exported_names(exposition: str) -> set[str]:
    """The sample names a Prometheus text exposition lets a query select.

    Taken from the ``# TYPE`` families, so a labelled family with no child
    yet (the rules' counters before the first rule) counts as exported, and a
    histogram's base name, which no sample carries, does not.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            for suffix in SAMPLE_SUFFIXES.get(kind, ("",)):
                names.add(name if name.endswith("_total") and suffix == "_total" else name + suffix)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])  # a sample without a TYPE line
    return names


def metric_names(expr: str) -> set[str]:
    """The rtcs_* and process_* names a PromQL expression uses."""
    return set(METRIC_NAME.findall(expr))


def load_dashboard() -> dict[str, Any]:
    """conf/grafana/rtcs.json."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included; rows themselves not."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Where -> PromQL: every panel target's expr and every query variable's query."""
    found = {}
    for panel in panels(dashboard):
        for target in panel["targets"]:
            found[f"panel {panel['title']!r} target {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found[f"variable {variable['name']!r}"] = variable["definition"]
    return found


def alert_rules() -> dict[str, dict[str, Any]]:
    """conf/prometheus/alerts.yml's alerting rules, by alert name."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def plain_promql(expr: str) -> str:
    """``expr`` with Grafana's variables replaced (see ``GRAFANA_VARIABLES``)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


# -- tools and processes ----------------------------------------------------------------


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command line tool to completion (``TOOL_TIMEOUT`` at most)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd=ROOT)


def alertmanager_binary() -> str:
    """Alertmanager: ``alertmanager`` upstream, ``prometheus-alertmanager`` on Debian.

    Raises:
        pytest.skip.Exception: neither is installed (outside CI).
        pytest.fail.Exception: neither is installed and ``CI`` is set.
    """
    return shutil.which("alertmanager") or require_binary(
        "prometheus-alertmanager", "prometheus-alertmanager"
    )


async def http(url: str, body: object = None, timeout: float = TIMEOUT) -> tuple[int, Any] | None:
    """GET ``url`` (POST ``body`` as JSON when given), off the event loop.

    Returns the status and the decoded JSON body (text if not JSON), or None
    when nothing answers.
    """

    def call() -> tuple[int, Any] | None:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except OSError:
            return None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    return await asyncio.get_running_loop().run_in_executor(None, call)


async def metrics_text(node: RtcsProcess) -> str:
    """The node's ``/metrics`` exposition.

    Raises:
        AssertionError: no answer, or not 200.
    """
    answer = await http(f"http://127.0.0.1:{node.port}/metrics")
    assert answer is not None and answer[0] == 200, answer
    return str(answer[1])


class Daemon:
    """A server binary on a free port of 127.0.0.1, ready once ``ready_path`` answers 200.

    ``args(port)`` gives its command line; its output goes to ``<name>.log``.
    """

    def __init__(
        self, name: str, args: Callable[[int], list[str]], ready_path: str, directory: Path
    ) -> None:
        self.name = name
        self.args = args
        self.ready_path = ready_path
        self.log = directory / f"{name}.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Daemon:
        """Start and wait until ready, on a second free port if the first was taken meanwhile.

        Raises:
            AssertionError: it did not become ready, twice.
        """
        failure = ""
        for _ in range(2):
            self.port = free_port()
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    self.args(self.port),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent(signal.SIGKILL),
                )
            try:
                await wait_until_returns(
                    self._ready, True, START_TIMEOUT, interval=0.05, message=f"{self.name} ready"
                )
                return self
            except AssertionError as exc:
                failure = f"{exc}: {self.log.read_text()[-2000:]}"
                self.stop()
        raise AssertionError(f"{self.name} did not start: {failure}")

    async def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
        answer = await http(self.url + self.ready_path, timeout=1.0)
        return answer is not None and answer[0] == 200

    async def get(self, path: str, **params: str) -> Any:
        """GET ``path`` with query ``params``: the JSON body of a 200 answer.

        Raises:
            AssertionError: no answer, or not 200.
        """
        query = urllib.parse.urlencode(params)
        answer = await http(f"{self.url}{path}?{query}" if query else self.url + path)
        assert answer is not None and answer[0] == 200, f"GET {path} {params}: {answer}"
        return answer[1]

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 5 s; idempotent."""
        stop(self.proc, 5.0)


def render_prometheus(target: str, rule_files: Iterable[Path]) -> dict[str, Any]:
    """The shipped prometheus.yml for one target on 127.0.0.1: scraped and
    evaluated every second, the rule files by absolute path, no Alertmanager."""
    rendered: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    rendered["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    rendered["rule_files"] = [str(path) for path in rule_files]
    rendered.pop("alerting", None)
    (job,) = rendered["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    return rendered


@dataclass
class Monitored:
    """A real rtcs node, and a real Prometheus scraping it with the alerts loaded."""

    node: RtcsProcess
    prometheus: Daemon

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.node.port}"

    async def query(self, promql: str) -> dict[str, Any]:
        """The ``data`` of an instant query.

        Raises:
            AssertionError: Prometheus refused or failed the query (its error).
        """
        answer = await http(
            f"{self.prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        )
        assert answer is not None, "prometheus did not answer"
        status, body = answer
        assert status == 200 and body["status"] == "success", f"{promql}: {body}"
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture
def directory() -> Iterator[Path]:
    path = temporary_directory("rtcs-ops-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def node(directory: Path) -> AsyncIterator[RtcsProcess]:
    """``python -m rtcs`` with the example rules (so the rules' metrics are exported)."""
    env = {**ENV, "RTCS_JWT_SECRET": SECRET, "RTCS_RULES_FILE": str(RULES_EXAMPLE)}
    started = RtcsProcess("rtcs", env, directory)
    try:
        yield await started.start()
    finally:
        started.stop()


@pytest.fixture
def prometheus_binary() -> str:
    return require_binary("prometheus", "prometheus")


@pytest.fixture
async def monitored(
    prometheus_binary: str, directory: Path, node: RtcsProcess
) -> AsyncIterator[Monitored]:
    conf = directory / "prometheus.yml"
    conf.write_text(yaml.safe_dump(render_prometheus(f"127.0.0.1:{node.port}", [ALERTS])))
    prometheus = Daemon(
        "prometheus",
        lambda port: [
            prometheus_binary,
            f"--config.file={conf}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        "/-/ready",
        directory,
    )
    try:
        await prometheus.start()
        yield Monitored(node, prometheus)
    finally:
        prometheus.stop()


async def connected_client(node: RtcsProcess) -> Client:
    headers = {"Authorization": f"Bearer {mint(AUTH, 'alice')}"}
    ws = await connect(node.url, additional_headers=headers, open_timeout=TIMEOUT)
    client = Client(ws)
    client.welcome = await client.expect("welcome")
    return client


# -- the pure helpers ---------------------------------------------------------------------


def test_exported_names_follow_the_type_families() -> None:
    exposition = "\n".join(
        [
            "# TYPE rtcs_opened_total counter",
            "rtcs_opened_total 3.0",
            "# TYPE rtcs_closed counter",  # OpenMetrics style: samples rtcs_closed_total
            "# TYPE rtcs_routing_seconds histogram",
            'rtcs_routing_seconds_bucket{le="+Inf"} 0.0',
            "# TYPE rtcs_rule_matches_total counter",  # no child yet: still exported
            "# TYPE rtcs_build_info gauge",
            'rtcs_build_info{version="1"} 1.0',
            "process_open_fds 9.0",  # no TYPE line
        ]
    )
    names = exported_names(exposition)
    assert {
        "rtcs_opened_total",
        "rtcs_closed_total",
        "rtcs_routing_seconds_bucket",
        "rtcs_routing_seconds_sum",
        "rtcs_routing_seconds_count",
        "rtcs_rule_matches_total",
        "rtcs_build_info",
        "process_open_fds",
    } <= names
    for wrong in (
        "rtcs_opened_total_total",
        "rtcs_routing_seconds",
        "rtcs_routing_seconds_total",
        "rtcs_build_info_total",
        "rtcs_build_info_bucket",
    ):
        assert wrong not in names, wrong


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(rtcs_routing_seconds_bucket{kind="topic"}[5m])))'
        " / on (instance) group_left max(process_open_fds) > rtcs_x"
    )
    assert metric_names(expr) == {"rtcs_routing_seconds_bucket", "process_open_fds", "rtcs_x"}
    assert metric_names('up{job="rtcs"} == 0') == set()


# -- promtool and amtool ------------------------------------------------------------------


def test_promtool_checks_the_alert_rules() -> None:
    promtool = require_binary("promtool", "prometheus")
    result = run_tool(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_rules())} rules found" in result.stdout


def test_promtool_runs_the_alert_unit_tests() -> None:
    promtool = require_binary("promtool", "prometheus")
    result = run_tool(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_every_alert_has_a_severity_an_instance_and_a_firing_unit_test() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    firing = set()
    quiet = 0
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            if check["exp_alerts"]:
                firing.add(check["alertname"])
            else:
                quiet += 1
    rules = alert_rules()
    assert set(rules) == firing, f"alerts without a firing test: {set(rules) - firing}"
    assert quiet >= 3, "a few checks that an alert stays quiet"
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        if name != "RtcsNoInstanceUp":  # absent(): no instance to name
            text = rule["annotations"]["summary"] + rule["annotations"]["description"]
            assert "$labels.instance" in text, name


def test_promtool_checks_the_prometheus_config() -> None:
    promtool = require_binary("promtool", "prometheus")
    shipped = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert shipped["rule_files"] == [ALERTS.name], "the alerts, relative to prometheus.yml"
    result = run_tool(promtool, "check", "config", str(PROMETHEUS_YML))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"{len(alert_rules())} rules found" in output, "the rule file was checked too"


def test_amtool_checks_the_alertmanager_config() -> None:
    amtool = require_binary("amtool", "prometheus-alertmanager")
    result = run_tool(amtool, "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "1 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("severity", "receiver"), [("critical", "pager"), ("warning", "tickets"), ("info", "null")]
)
def test_alertmanager_routes_by_severity(severity: str, receiver: str) -> None:
    amtool = require_binary("amtool", "prometheus-alertmanager")
    result = run_tool(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_YML}",
        f"--verify.receivers={receiver}",
        f"severity={severity}",
        "alertname=RtcsInstanceDown",
        "instance=rtcs-1:8765",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


async def test_a_critical_alert_silences_the_warnings_of_its_instance_only(
    directory: Path,
) -> None:
    binary = alertmanager_binary()
    alertmanager = Daemon(
        "alertmanager",
        lambda port: [
            binary,
            f"--config.file={ALERTMANAGER_YML}",
            f"--storage.path={directory / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: nothing else to bind
        ],
        "/-/ready",
        directory,
    )
    await alertmanager.start()
    try:
        rules = alert_rules()

        def alert(name: str, instance: str) -> dict[str, Any]:
            labels = {"alertname": name, "instance": instance, **rules[name]["labels"]}
            return {"labels": labels, "annotations": {"summary": name}}

        sent = [
            alert("RtcsBackendBreakerOpen", "rtcs-1:8765"),
            alert("RtcsOutboxDrops", "rtcs-1:8765"),
            alert("RtcsOutboxDrops", "rtcs-2:8765"),
        ]
        answer = await http(alertmanager.url + "/api/v2/alerts", sent)
        assert answer is not None and answer[0] == 200, answer

        async def states() -> dict[tuple[str, str], str]:
            listed = await alertmanager.get("/api/v2/alerts")
            return {
                (a["labels"]["alertname"], a["labels"]["instance"]): a["status"]["state"]
                for a in listed
            }

        await wait_until_returns(
            states,
            {
                ("RtcsBackendBreakerOpen", "rtcs-1:8765"): "active",
                ("RtcsOutboxDrops", "rtcs-1:8765"): "suppressed",
                ("RtcsOutboxDrops", "rtcs-2:8765"): "active",
            },
            START_TIMEOUT,
            interval=POLL,
        )
    finally:
        alertmanager.stop()


# -- a real Prometheus scraping a real node -----------------------------------------------


async def test_prometheus_scrapes_a_node_and_evaluates_the_alerts_and_the_dashboard(
    monitored: Monitored,
) -> None:
    # The node's samples arrive under its instance: an open connection shows.
    client = await connected_client(monitored.node)
    try:

        async def active() -> list[tuple[str, str, str]]:
            data = await monitored.query("rtcs_connections_active")
            return [
                (s["metric"].get("job", ""), s["metric"]["instance"], s["value"][1])
                for s in data["result"]
            ]

        await wait_until_returns(
            active, [("rtcs", monitored.instance, "1")], SCRAPE_TIMEOUT, interval=POLL
        )
    finally:
        await client.ws.close()

    # The dashboard's instance variable lists it.
    values = await monitored.prometheus.get(
        "/api/v1/label/instance/values", **{"match[]": "rtcs_build_info"}
    )
    assert values["data"] == [monitored.instance]

    # Every alert loaded, and evaluates on the node's series without an error
    # (a vector-matching mistake only shows with real series).
    async def rule_health() -> dict[str, str]:
        groups = (await monitored.prometheus.get("/api/v1/rules"))["data"]["groups"]
        return {
            rule["name"]: rule["health"]
            + (f": {rule['lastError']}" if rule.get("lastError") else "")
            for group in groups
            for rule in group["rules"]
        }

    await wait_until_returns(
        rule_health, dict.fromkeys(alert_rules(), "ok"), SCRAPE_TIMEOUT, interval=POLL
    )

    # Every dashboard query runs, and those on names the node exports return
    # series: a label value the node never exports leaves a panel empty (rates
    # need two scrapes: polled). Unexported names are the next test's.
    exported = exported_names(await metrics_text(monitored.node))
    queries = {
        where: plain_promql(expr)
        for where, expr in dashboard_queries(load_dashboard()).items()
        if where.startswith("panel")
    }

    async def empty() -> list[str]:
        found = []
        for where, expr in queries.items():
            result = (await monitored.query(expr))["result"]
            if not result and metric_names(expr) <= exported:
                found.append(f"{where}: {expr}")
        return found

    await wait_until_returns(empty, [], SCRAPE_TIMEOUT, interval=POLL)


# -- metric names ---------------------------------------------------------------------------


async def test_every_metric_name_in_the_dashboard_and_the_alerts_is_exported(
    node: RtcsProcess,
) -> None:
    exported = exported_names(await metrics_text(node))
    used: dict[str, list[str]] = {}
    for where, expr in dashboard_queries(load_dashboard()).items():
        for name in metric_names(expr):
            used.setdefault(name, []).append(f"dashboard {where}")
    for alert, rule in alert_rules().items():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, []).append(f"alert {alert}")
    assert len(used) > 20, sorted(used)
    missing = {name: where for name, where in sorted(used.items()) if name not in exported}
    assert not missing, "not exported by a running node:\n" + "\n".join(
        f"  {name}: {', '.join(where)}" for name, where in missing.items()
    )


# -- the dashboard and the deployment files ---------------------------------------------------


def test_the_dashboard_is_a_valid_grafana_dashboard() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["definition"] == "label_values(rtcs_build_info, instance)"
    assert instance["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    found = list(panels(dashboard))
    assert len(found) >= 20
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in found:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], f"{title}: no queries"
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), title
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{title}: refIds are unique"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], title
            assert target["expr"].strip(), title
            # Every query is per instance, and follows the instance variable.
            assert 'instance=~"$instance"' in target["expr"], f"{title}: {target['expr']}"
            assert "by (instance" in target["expr"], f"{title}: {target['expr']}"


def test_the_dashboard_covers_the_metrics_operators_watch() -> None:
    used = set().union(*map(metric_names, dashboard_queries(load_dashboard()).values()))
    watched = {
        "rtcs_connections_active",
        "rtcs_connections_opened_total",
        "rtcs_messages_in_total",
        "rtcs_messages_out_total",
        "rtcs_deliveries_total",
        "rtcs_routing_seconds_bucket",
        "rtcs_errors_total",
        "rtcs_connections_closed_total",
        "rtcs_actor_restarts_total",
        "rtcs_outbox_drops_total",
        "rtcs_rate_limited_total",
        "rtcs_backend_breaker_state",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "rtcs_event_loop_lag_seconds_bucket",
        "rtcs_sessions_attached",
        "rtcs_rule_matches_total",
        "rtcs_rule_drops_total",
        "rtcs_route_cache_hits_total",
        "rtcs_actor_mailbox_messages",
        "rtcs_connection_duration_seconds_bucket",
        "rtcs_supervisor_escalations_total",
    }
    assert watched <= used, watched - used


def _mounts(service: str) -> dict[str, str]:
    """Container path -> host path of a compose service's bind mounts."""
    found = {}
    for volume in COMPOSE["services"][service].get("volumes", []):
        host, container = volume.split(":")[:2]
        found[container] = host
    return found


def test_compose_wires_the_alerts_the_alertmanager_and_the_dashboard() -> None:
    services = COMPOSE["services"]
    # Prometheus finds each rule file next to its config, as in the repository.
    mounts = _mounts("prometheus")
    shipped = yaml.safe_load(PROMETHEUS_YML.read_text())
    config_dir = Path("/etc/prometheus/prometheus.yml").parent
    for rule_file in shipped["rule_files"]:
        host = mounts.get(str(config_dir / rule_file))
        assert host is not None, f"{rule_file} is not mounted next to prometheus.yml"
        assert (ROOT / host).resolve() == (PROMETHEUS_DIR / rule_file).resolve()
    # ... and sends alerts to the alertmanager service, which reads the shipped config.
    ((target,),) = [
        group["targets"]
        for manager in shipped["alerting"]["alertmanagers"]
        for group in manager["static_configs"]
    ]
    host, _, port = target.partition(":")
    assert host in services and f"{port}:{port}" in services[host]["ports"]
    assert host in services["prometheus"]["depends_on"]
    am_mounts = _mounts(host)
    assert (ROOT / am_mounts["/etc/alertmanager/alertmanager.yml"]).resolve() == ALERTMANAGER_YML
    # Grafana's dashboard provider reads a folder inside the provisioning mount
    # that holds the dashboard.
    (provisioning_host,) = [
        h for c, h in _mounts("grafana").items() if c == "/etc/grafana/provisioning"
    ]
    providers = [
        provider
        for path in sorted((ROOT / provisioning_host / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    (provider,) = providers
    inside = Path(provider["options"]["path"]).relative_to("/etc/grafana/provisioning")
    folder = ROOT / provisioning_host / inside
    assert (folder / DASHBOARD.name).resolve() == DASHBOARD.resolve()
    assert [p.name for p in folder.glob("*.json")] == [DASHBOARD.name]


def test_the_operations_guide_lists_every_alert() -> None:
    text = OPERATIONS.read_text()
    section = text[text.index("## Dashboards and alerts") :]
    rows = {
        cells[0].strip("`"): cells
        for line in section.splitlines()
        if line.startswith("| `Rtcs")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    rules = alert_rules()
    assert set(rows) == set(rules)
    for name, rule in rules.items():
        *_, wait, severity = rows[name]
        assert (wait, severity) == (rule.get("for", "—"), rule["labels"]["severity"]), name
