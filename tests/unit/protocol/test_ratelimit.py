"""Token bucket and rate limiter, driven by an explicit clock."""

from __future__ import annotations

import pytest

from rtcs.protocol.ratelimit import Limit, RateLimiter, TokenBucket, Verdict


def test_bucket_starts_full_and_refills() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(100.05)  # half a token
    assert bucket.take(100.1)
    assert not bucket.take(100.1)
    assert bucket.tokens(200.0) == 3  # capped at burst
    assert [bucket.take(200.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_take_n_is_all_or_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=5, now=0.0)
    assert bucket.take(0.0, 3)
    assert not bucket.take(0.0, 3)
    assert bucket.take(0.0, 2)


def test_bucket_ignores_a_clock_stepping_back() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0)])
def test_bucket_rejects_bad_settings(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)


def test_limiter_allows_then_rejects_then_closes() -> None:
    limiter = RateLimiter(rate=1, burst=2, close_after=3, window=10.0, now=0.0)
    verdicts = [limiter.check(0.0) for _ in range(6)]
    assert verdicts == [
        Verdict.ALLOW,
        Verdict.ALLOW,
        Verdict.REJECT,
        Verdict.REJECT,
        Verdict.REJECT,
        Verdict.CLOSE,
    ]


def test_limiter_forgets_rejections_older_than_the_window() -> None:
    limiter = RateLimiter(rate=1, burst=1, close_after=2, window=10.0, now=0.0)
    assert limiter.check(0.0) is Verdict.ALLOW
    assert limiter.check(0.0) is Verdict.REJECT
    assert limiter.check(0.5) is Verdict.REJECT
    # 11 s later the two rejections are outside the window.
    assert limiter.check(11.0) is Verdict.ALLOW
    assert limiter.check(11.0) is Verdict.REJECT
    assert limiter.check(11.0) is Verdict.REJECT
    assert limiter.check(11.0) is Verdict.CLOSE


def test_limiter_counts_rejections_spread_across_the_window() -> None:
    limiter = RateLimiter(rate=0.01, burst=1, close_after=3, window=10.0, now=0.0)
    assert limiter.check(0.0) is Verdict.ALLOW
    assert [limiter.check(t) for t in (1.0, 4.0, 7.0, 9.5)] == [
        Verdict.REJECT,
        Verdict.REJECT,
        Verdict.REJECT,
        Verdict.CLOSE,
    ]


def test_old_rejections_age_out_of_the_window() -> None:
    """Rejections count within the window only: old excess never adds up to a close."""
    limiter = RateLimiter(rate=1, burst=1, close_after=3, window=5.0, now=0.0)

    def burst(at: float) -> list[Verdict]:
        return [limiter.check(at + i * 0.01) for i in range(4)]

    assert burst(0.0) == [Verdict.ALLOW, Verdict.REJECT, Verdict.REJECT, Verdict.REJECT]
    # Ten seconds later the first three rejections have left the window.
    assert burst(10.0) == [Verdict.ALLOW, Verdict.REJECT, Verdict.REJECT, Verdict.REJECT]
    # Within the window, one more rejection is the fourth: close.
    assert limiter.check(10.05) is Verdict.CLOSE


@pytest.mark.parametrize(("close_after", "window"), [(-1, 1.0), (1, 0.0), (1, float("nan"))])
def test_limiter_rejects_bad_settings(close_after: int, window: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(1, 1, close_after, window, 0.0)


def test_invalid_frames_spend_the_error_budget() -> None:
    limiter = RateLimiter(rate=100, burst=100, close_after=2, window=10.0, now=0.0)
    assert [limiter.penalize(0.0) for _ in range(3)] == [
        Verdict.REJECT,
        Verdict.REJECT,
        Verdict.CLOSE,
    ]


def test_penalties_take_no_token_and_share_the_window_with_rejections() -> None:
    limiter = RateLimiter(rate=0.001, burst=1, close_after=2, window=10.0, now=0.0)
    assert limiter.penalize(0.0) is Verdict.REJECT
    assert limiter.check(0.0) is Verdict.ALLOW  # the penalty took no token
    assert limiter.check(1.0) is Verdict.REJECT
    assert limiter.penalize(2.0) is Verdict.CLOSE  # third strike of either kind


def test_penalties_age_out_of_the_window() -> None:
    limiter = RateLimiter(rate=1, burst=1, close_after=1, window=5.0, now=0.0)
    assert limiter.penalize(0.0) is Verdict.REJECT
    assert limiter.penalize(10.0) is Verdict.REJECT
    assert limiter.penalize(10.1) is Verdict.CLOSE


# -- the byte budget (limits.byte_rate / limits.byte_burst) -------------------------


def _bytes_limiter(
    *, rate: float = 100, burst: int = 100, byte_rate: float = 10, byte_burst: int = 100
) -> RateLimiter:
    return RateLimiter(
        rate, burst, close_after=3, window=10.0, now=0.0, byte_rate=byte_rate, byte_burst=byte_burst
    )


def test_bucket_give_returns_tokens_up_to_burst() -> None:
    bucket = TokenBucket(rate=1, burst=5, now=0.0)
    assert bucket.take(0.0, 5)
    bucket.give(2)
    assert bucket.tokens(0.0) == 2
    bucket.give(10)
    assert bucket.tokens(0.0) == 5


def test_bytes_run_out_before_frames() -> None:
    limiter = _bytes_limiter()
    assert [limiter.check(0.0, 40) for _ in range(3)] == [
        Verdict.ALLOW,
        Verdict.ALLOW,
        Verdict.REJECT,
    ]
    assert limiter.refused_by is Limit.BYTES
    # 20 bytes left: small frames still pass, the frame bucket has room.
    assert [limiter.check(0.0, 10) for _ in range(2)] == [Verdict.ALLOW, Verdict.ALLOW]
    assert limiter.check(0.0, 1) is Verdict.REJECT
    assert limiter.refused_by is Limit.BYTES


def test_a_frame_refused_for_bytes_takes_no_frame_token() -> None:
    limiter = _bytes_limiter(rate=0.001, burst=2, byte_rate=0.001, byte_burst=10)
    assert limiter.check(0.0, 11) is Verdict.REJECT
    assert limiter.refused_by is Limit.BYTES
    assert limiter.check(0.0, 5) is Verdict.ALLOW
    assert limiter.check(0.0, 5) is Verdict.ALLOW  # both frame tokens were still there
    # (A tuple: mypy would keep ``refused_by`` narrowed to BYTES from above.)
    assert (limiter.check(0.0, 0), limiter.refused_by) == (Verdict.REJECT, Limit.FRAMES)


def test_a_frame_refused_for_frames_takes_no_bytes() -> None:
    limiter = _bytes_limiter(rate=1, burst=1, byte_rate=0.001, byte_burst=10)
    assert limiter.check(0.0, 5) is Verdict.ALLOW
    assert limiter.check(0.5, 5) is Verdict.REJECT
    assert limiter.refused_by is Limit.FRAMES
    assert limiter.check(1.0, 5) is Verdict.ALLOW  # the refused frame left its 5 bytes


def test_bytes_refill_at_byte_rate() -> None:
    limiter = _bytes_limiter(byte_rate=10, byte_burst=100)
    assert limiter.check(0.0, 100) is Verdict.ALLOW
    assert limiter.check(0.0, 10) is Verdict.REJECT
    assert limiter.check(0.5, 10) is Verdict.REJECT  # 5 bytes back
    assert limiter.check(1.0, 10) is Verdict.ALLOW  # 10 bytes back
    assert limiter.check(100.0, 100) is Verdict.ALLOW  # refilled to the burst, no more
    assert limiter.check(100.0, 1) is Verdict.REJECT


def test_a_frame_of_byte_burst_passes_a_larger_one_never() -> None:
    """``limits.byte_burst`` >= ``limits.max_message_size``: a maximal frame can pass."""
    limiter = _bytes_limiter(byte_rate=1000, byte_burst=100)
    assert limiter.check(0.0, 100) is Verdict.ALLOW
    assert limiter.check(1000.0, 101) is Verdict.REJECT
    assert limiter.check(1000.0, 100) is Verdict.ALLOW


def test_byte_rejections_spend_the_error_budget() -> None:
    limiter = _bytes_limiter(byte_rate=0.001, byte_burst=10)
    assert [limiter.check(0.0, 11) for _ in range(4)] == [
        Verdict.REJECT,
        Verdict.REJECT,
        Verdict.REJECT,
        Verdict.CLOSE,
    ]
    assert limiter.refused_by is Limit.BYTES


def test_without_a_byte_limit_only_frames_count() -> None:
    limiter = RateLimiter(rate=1, burst=2, close_after=3, window=10.0, now=0.0)
    assert limiter.check(0.0, 10**9) is Verdict.ALLOW
    assert limiter.check(0.0, 10**9) is Verdict.ALLOW
    assert limiter.check(0.0, 1) is Verdict.REJECT
    assert limiter.refused_by is Limit.FRAMES


@pytest.mark.parametrize(
    ("byte_rate", "byte_burst"), [(0.0, 10), (float("inf"), 10), (1.0, 0), (1.0, None)]
)
def test_limiter_rejects_bad_byte_settings(byte_rate: float, byte_burst: int | None) -> None:
    with pytest.raises(ValueError):
        RateLimiter(1, 1, 1, 1.0, 0.0, byte_rate=byte_rate, byte_burst=byte_burst)
