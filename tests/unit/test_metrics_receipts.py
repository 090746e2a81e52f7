"""The delivery-receipt metrics (rtcs.metrics.Metrics.watch_receipts): read from
the node's ReceiptCounts when scraped."""

from __future__ import annotations

from rtcs.metrics import Metrics
from rtcs.sessions import ReceiptCounts


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def test_zeros_before_any_source() -> None:
    metrics = Metrics()
    assert sample(metrics, "rtcs_receipts_pending") == 0
    assert sample(metrics, "rtcs_redeliveries_total") == 0
    assert sample(metrics, "rtcs_receipts_given_up_total", reason="attempts") == 0
    assert sample(metrics, "rtcs_receipts_given_up_total", reason="evicted") == 0


def test_read_from_the_counts_at_every_scrape() -> None:
    metrics, counts = Metrics(), ReceiptCounts()
    metrics.watch_receipts(counts)
    counts.pending, counts.redeliveries = 4, 9
    counts.given_up["evicted"] += 2
    assert sample(metrics, "rtcs_receipts_pending") == 4
    assert sample(metrics, "rtcs_redeliveries_total") == 9
    assert sample(metrics, "rtcs_receipts_given_up_total", reason="evicted") == 2
    counts.pending = 0
    assert sample(metrics, "rtcs_receipts_pending") == 0
    body, _ = metrics.render()
    assert b"# TYPE rtcs_receipts_given_up_total counter" in body
