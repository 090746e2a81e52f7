"""rtcs.metrics: names, bounded labels, zeros up front, rendering."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rtcs import __version__
from rtcs.errors import CloseCode, ErrorCode
from rtcs.metrics import Metrics
from rtcs.protocol.ratelimit import Limit


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def label_values(m: Metrics, sample_name: str, label: str) -> set[str]:
    body, _ = m.render()
    return {
        sample.labels[label]
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == sample_name
    }


def test_every_metric_has_its_documented_name(metrics: Metrics) -> None:
    body, content_type = metrics.render()
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {
        "rtcs_connections_active",
        "rtcs_connections_opened",
        "rtcs_connections_closed",
        "rtcs_handshakes_rejected",
        "rtcs_messages_in",
        "rtcs_messages_out",
        "rtcs_deliveries",
        "rtcs_errors",
        "rtcs_routing_seconds",
        "rtcs_actor_restarts",
        "rtcs_outbox_drops",
        "rtcs_sessions_attached",
        "rtcs_sessions_detached",
        "rtcs_resumes",
        "rtcs_rate_limited",
        "rtcs_broker_errors",
        "rtcs_event_loop_lag_seconds",
        "rtcs_build_info",
        "rtcs_connection_duration_seconds",
        "rtcs_supervisor_escalations",
        "rtcs_actor_mailbox_messages",
        "rtcs_backend_breaker_state",
        "rtcs_backend_breaker_transitions",
        "rtcs_degraded",
        "rtcs_rule_matches",
        "rtcs_rules_loaded",
        "rtcs_rules_reloads",
    } <= names
    assert content_type.startswith("text/plain")


def test_a_private_registry_per_instance() -> None:
    one, two = Metrics(), Metrics()
    one.opened()
    assert value(one, "rtcs_connections_active") == 1
    assert value(two, "rtcs_connections_active") == 0


def test_a_shared_registry_refuses_a_second_instance() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError):
        Metrics(registry)


def test_known_label_values_export_zero_before_any_event(metrics: Metrics) -> None:
    assert value(metrics, "rtcs_connections_closed_total", code="4008") == 0
    assert value(metrics, "rtcs_connections_closed_total", code="other") == 0
    assert value(metrics, "rtcs_handshakes_rejected_total", status="429") == 0
    assert value(metrics, "rtcs_messages_in_total", type="invalid") == 0
    assert value(metrics, "rtcs_messages_out_total", type="presence_state") == 0
    assert value(metrics, "rtcs_deliveries_total", kind="filter") == 0
    assert value(metrics, "rtcs_errors_total", code="unavailable") == 0
    assert value(metrics, "rtcs_routing_seconds_count", kind="direct") == 0
    assert (
        value(metrics, "rtcs_actor_restarts_total", supervisor="router", strategy="rest_for_one")
        == 0
    )
    assert value(metrics, "rtcs_outbox_drops_total", reason="write_buffer") == 0
    assert value(metrics, "rtcs_resumes_total", result="expired") == 0


def test_open_and_close_move_the_gauge_and_count_codes(metrics: Metrics) -> None:
    metrics.opened()
    metrics.opened()
    metrics.closed(CloseCode.TOO_SLOW)
    metrics.closed(1000)
    assert value(metrics, "rtcs_connections_opened_total") == 2
    assert value(metrics, "rtcs_connections_active") == 0
    assert value(metrics, "rtcs_connections_closed_total", code="4008") == 1
    assert value(metrics, "rtcs_connections_closed_total", code="1000") == 1


def test_unknown_close_codes_are_other(metrics: Metrics) -> None:
    for code in (1002, 4999, 3000):
        metrics.opened()
        metrics.closed(code)
    assert value(metrics, "rtcs_connections_closed_total", code="other") == 3
    assert label_values(metrics, "rtcs_connections_closed_total", "code") == {
        *(str(int(c)) for c in CloseCode),
        "other",
    }


def test_handshake_statuses_are_bounded(metrics: Metrics) -> None:
    metrics.handshake_rejected(401)
    metrics.handshake_rejected(418)
    assert value(metrics, "rtcs_handshakes_rejected_total", status="401") == 1
    assert value(metrics, "rtcs_handshakes_rejected_total", status="other") == 1


def test_client_frame_types_are_bounded_whatever_the_client_sends(metrics: Metrics) -> None:
    metrics.frame_in("publish")
    for junk in ("PUBLISH", "x" * 500, None, 7, ["list"], {"obj": 1}):
        metrics.frame_in(junk)
    assert value(metrics, "rtcs_messages_in_total", type="publish") == 1
    assert value(metrics, "rtcs_messages_in_total", type="invalid") == 6
    assert label_values(metrics, "rtcs_messages_in_total", "type") == {
        "auth",
        "subscribe",
        "unsubscribe",
        "publish",
        "send",
        "join",
        "leave",
        "broadcast",
        "presence",
        "ping",
        "received",
        "invalid",
    }


def test_server_frame_types_are_bounded(metrics: Metrics) -> None:
    metrics.frame_out("message")
    metrics.frame_out("presence", 4)
    metrics.frame_out("surprise")
    assert value(metrics, "rtcs_messages_out_total", type="message") == 1
    assert value(metrics, "rtcs_messages_out_total", type="presence") == 4
    assert value(metrics, "rtcs_messages_out_total", type="other") == 1


def test_errors_take_wire_codes_only(metrics: Metrics) -> None:
    metrics.error(ErrorCode.RATE_LIMITED)
    metrics.error("bad_topic")
    assert value(metrics, "rtcs_errors_total", code="rate_limited") == 1
    assert value(metrics, "rtcs_errors_total", code="bad_topic") == 1
    with pytest.raises(ValueError):
        metrics.error("E_CLIENT_MADE_THIS_UP")


def test_deliveries_and_routing_by_kind(metrics: Metrics) -> None:
    metrics.delivered("topic", 3)
    metrics.delivered("user")
    metrics.delivered("connection", 2)
    metrics.routed("room", 0.00002)
    metrics.routed("connection", 0.5)
    assert value(metrics, "rtcs_deliveries_total", kind="topic") == 3
    assert value(metrics, "rtcs_deliveries_total", kind="direct") == 3
    assert value(metrics, "rtcs_routing_seconds_bucket", kind="room", le="2.5e-05") == 1
    assert value(metrics, "rtcs_routing_seconds_bucket", kind="room", le="1e-05") == 0
    assert value(metrics, "rtcs_routing_seconds_count", kind="direct") == 1
    with pytest.raises(ValueError):
        metrics.delivered("news.sport")
    with pytest.raises(ValueError):
        metrics.routed("lobby", 0.1)


def test_routing_buckets_span_ten_microseconds_to_a_second(metrics: Metrics) -> None:
    bounds = label_values(metrics, "rtcs_routing_seconds_bucket", "le")
    numeric = sorted(float(b) for b in bounds if b != "+Inf")
    assert numeric[0] == pytest.approx(1e-5)
    assert numeric[-1] == pytest.approx(1.0)


def test_restarts_are_bounded(metrics: Metrics) -> None:
    metrics.restart("router", "one_for_one")
    metrics.restart("RoomHandler-42", "all_for_one")
    assert (
        value(metrics, "rtcs_actor_restarts_total", supervisor="router", strategy="one_for_one")
        == 1
    )
    assert (
        value(metrics, "rtcs_actor_restarts_total", supervisor="other", strategy="all_for_one") == 1
    )
    with pytest.raises(ValueError):
        metrics.restart("router", "restart_everything")


def test_outbox_drops_resumes_and_plain_counters(metrics: Metrics) -> None:
    metrics.outbox_drop("overflow")
    metrics.resume("resumed")
    metrics.rate_limit(Limit.BYTES)
    metrics.broker_errors.inc()
    metrics.sessions_detached.set(4)
    metrics.loop_lag(0.003)
    assert value(metrics, "rtcs_outbox_drops_total", reason="overflow") == 1
    assert value(metrics, "rtcs_resumes_total", result="resumed") == 1
    assert value(metrics, "rtcs_rate_limited_total", limit="bytes") == 1
    assert value(metrics, "rtcs_rate_limited_total", limit="frames") == 0
    assert value(metrics, "rtcs_broker_errors_total") == 1
    assert value(metrics, "rtcs_sessions_detached") == 4
    assert value(metrics, "rtcs_event_loop_lag_seconds_count") == 1
    with pytest.raises(ValueError):
        metrics.outbox_drop("bored")
    with pytest.raises(ValueError):
        metrics.resume("maybe")


def test_build_info_names_version_and_node(metrics: Metrics) -> None:
    metrics.set_build(node="node-7")
    assert value(metrics, "rtcs_build_info", version=__version__, node="node-7") == 1


def test_rule_series_follow_the_rules_in_use(metrics: Metrics) -> None:
    metrics.rules_loaded(["a", "b"], "v1")
    assert value(metrics, "rtcs_rule_matches_total", rule="a") == 0
    assert value(metrics, "rtcs_rules_loaded") == 2
    assert value(metrics, "rtcs_rules_info", version="v1") == 1
    metrics.rule_outcome(["a", "b"], ["b"], ["a"], [])
    metrics.rule_outcome([], [], [], ["a"])
    assert value(metrics, "rtcs_rule_matches_total", rule="a") == 1
    assert value(metrics, "rtcs_rule_drops_total", rule="b") == 1
    assert value(metrics, "rtcs_rule_reroutes_total", rule="a") == 1
    assert value(metrics, "rtcs_rule_errors_total", rule="a") == 1
    # a reload: "a" is gone with its series, "c" starts at zero
    metrics.rules_loaded(["b", "c"], "v2")
    assert label_values(metrics, "rtcs_rule_matches_total", "rule") == {"b", "c"}
    assert value(metrics, "rtcs_rule_drops_total", rule="b") == 1
    assert value(metrics, "rtcs_rules_info", version="v2") == 1
    assert value(metrics, "rtcs_rules_info", version="v1") is None


def test_route_cache_counters_are_read_at_scrape_time(metrics: Metrics) -> None:
    class Stats:
        hits, misses, size = 5, 2, 2

    assert value(metrics, "rtcs_route_cache_hits_total") is None  # no rules: not exported
    metrics.watch_route_cache(Stats)
    assert value(metrics, "rtcs_route_cache_hits_total") == 5
    assert value(metrics, "rtcs_route_cache_misses_total") == 2
    assert value(metrics, "rtcs_route_cache_topics") == 2
    Stats.hits = 9
    assert value(metrics, "rtcs_route_cache_hits_total") == 9


def test_route_plugin_failure_reasons_are_bounded(metrics: Metrics) -> None:
    metrics.route_plugin_failure("mod", "timeout")
    metrics.route_plugin_failure("mod", "a reason nobody listed")
    assert value(metrics, "rtcs_route_plugin_failures_total", plugin="mod", reason="timeout") == 1
    assert value(metrics, "rtcs_route_plugin_failures_total", plugin="mod", reason="other") == 1


def test_loop_counters_and_histograms_export_like_prometheus_client() -> None:
    from prometheus_client import Counter, Histogram

    from rtcs.metrics import LoopCounter, LoopHistogram

    theirs_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.01, 0.1)
    their_counter = Counter("c_total", "doc", ["k"], registry=theirs_registry)
    their_histogram = Histogram("h", "doc", ["k"], buckets=buckets, registry=theirs_registry)
    our_counter = LoopCounter("c_total", "doc", "k", ("a", "b"), ours_registry)
    our_histogram = LoopHistogram("h", "doc", "k", ("a", "b"), buckets, ours_registry)
    for k in ("a", "b"):
        their_counter.labels(k)
        their_histogram.labels(k)
    for amount in (0.0005, 0.001, 0.002, 0.1, 5.0):  # on and between the bounds
        their_histogram.labels("a").observe(amount)
        our_histogram.observe("a", amount)
    their_counter.labels("b").inc(3)
    our_counter.values["b"] += 3

    def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        body = generate_latest(registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for family in text_string_to_metric_families(body)
            for s in family.samples
            if not s.name.endswith("_created")
        }

    assert samples(ours_registry) == samples(theirs_registry)


def test_a_rule_counted_before_it_was_announced_gets_its_series(metrics: Metrics) -> None:
    metrics.rules_loaded(["a"], "v1")
    metrics.rule_outcome(["late"], [], [], [])
    assert value(metrics, "rtcs_rule_matches_total", rule="late") == 1
    assert value(metrics, "rtcs_rules_info", version="v1") == 1  # the version stays
    assert value(metrics, "rtcs_rules_loaded") == 1


def test_process_python_and_gc_collectors_are_on_the_node_registry(metrics: Metrics) -> None:
    body, _ = metrics.render()
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections",
    } <= names
    assert (value(metrics, "process_start_time_seconds") or 0) > 0


def test_connection_duration_is_observed_when_given(metrics: Metrics) -> None:
    for _ in range(3):
        metrics.opened()
    metrics.closed(1000)  # the duration is optional: nothing observed
    metrics.closed(1000, 12.5)
    metrics.closed(CloseCode.GOING_AWAY, -0.001)  # a clock step never observes < 0
    assert value(metrics, "rtcs_connections_closed_total", code="1000") == 2
    assert value(metrics, "rtcs_connection_duration_seconds_count") == 2
    assert value(metrics, "rtcs_connection_duration_seconds_sum") == 12.5
    assert value(metrics, "rtcs_connection_duration_seconds_bucket", le="1.0") == 1
    assert value(metrics, "rtcs_connection_duration_seconds_bucket", le="5.0") == 1
    assert value(metrics, "rtcs_connection_duration_seconds_bucket", le="15.0") == 2
    assert value(metrics, "rtcs_connections_active") == 0


def test_connection_duration_buckets_span_a_second_to_a_day(metrics: Metrics) -> None:
    bounds = label_values(metrics, "rtcs_connection_duration_seconds_bucket", "le")
    numeric = sorted(float(b) for b in bounds if b != "+Inf")
    assert numeric[0] == 1.0
    assert numeric[-1] == 86400.0


def test_escalations_are_counted_by_supervisor_and_bounded(metrics: Metrics) -> None:
    assert value(metrics, "rtcs_supervisor_escalations_total", supervisor="router") == 0
    metrics.escalated("router")
    metrics.escalated("a-plugin-supervisor")
    assert value(metrics, "rtcs_supervisor_escalations_total", supervisor="router") == 1
    assert value(metrics, "rtcs_supervisor_escalations_total", supervisor="other") == 1
    assert label_values(metrics, "rtcs_supervisor_escalations_total", "supervisor") == {
        "system",
        "server",
        "connections",
        "router",
        "metrics",
        "plugins",
        "other",
    }


def test_mailbox_gauge_exports_every_kind_before_anything_waits(metrics: Metrics) -> None:
    from rtcs.metrics import ACTOR_KINDS

    assert label_values(metrics, "rtcs_actor_mailbox_messages", "kind") == set(ACTOR_KINDS)
    assert value(metrics, "rtcs_actor_mailbox_messages", kind="connection") == 0


def test_mailbox_gauge_is_read_at_scrape_time_and_bounded(metrics: Metrics) -> None:
    waiting = {"connection": 3, "route.topic": 1, "SomeoneElsesActor": 2}
    metrics.watch_mailboxes(lambda: waiting)
    assert value(metrics, "rtcs_actor_mailbox_messages", kind="connection") == 3
    assert value(metrics, "rtcs_actor_mailbox_messages", kind="route.topic") == 1
    assert value(metrics, "rtcs_actor_mailbox_messages", kind="other") == 2
    assert value(metrics, "rtcs_actor_mailbox_messages", kind="stats") == 0
    waiting["connection"] = 0
    assert value(metrics, "rtcs_actor_mailbox_messages", kind="connection") == 0
    metrics.watch_mailboxes(lambda: {"stats": 4})  # a restarted tree replaces the source
    assert value(metrics, "rtcs_actor_mailbox_messages", kind="stats") == 4
    assert value(metrics, "rtcs_actor_mailbox_messages", kind="route.topic") == 0


def test_the_tree_reports_only_kinds_the_gauge_knows() -> None:
    from rtcs.actors.tree import ACTOR_KINDS as TREE_KINDS
    from rtcs.actors.tree import PLUGIN_KIND, actor_kind
    from rtcs.metrics import ACTOR_KINDS
    from rtcs.runtime.introspect import RUNTIME

    assert {*TREE_KINDS.values(), PLUGIN_KIND, RUNTIME} <= set(ACTOR_KINDS)
    assert len(set(TREE_KINDS.values())) == len(TREE_KINDS)  # one kind per class

    class SomePluginActor:
        pass

    assert actor_kind(SomePluginActor) == PLUGIN_KIND


def test_breaker_state_is_remembered(metrics: Metrics) -> None:
    assert metrics.breaker_now == "closed"
    metrics.breaker("open")
    assert metrics.breaker_now == "open"
    assert value(metrics, "rtcs_backend_breaker_state", state="open") == 1
    assert value(metrics, "rtcs_backend_breaker_transitions_total", to="open") == 1
    assert value(metrics, "rtcs_degraded") == 1
    with pytest.raises(ValueError):
        metrics.breaker("ajar")
    assert metrics.breaker_now == "open"
