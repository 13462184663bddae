from holdfast.entrypoints.ratelimit import RateLimiter


def test_a_bucket_allows_bursts_then_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=3)
    assert [limiter.allow("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert abs(limiter.allow("a", now=0.0) - 0.1) < 1e-9
    assert limiter.allow("b", now=0.0) == 0.0  # subjects are independent
    assert limiter.allow("a", now=0.25) == 0.0  # refilled at 10/s


def test_zero_rate_means_no_limit() -> None:
    limiter = RateLimiter(rate_per_s=0, burst=0)
    assert all(limiter.allow("a") == 0.0 for _ in range(1000))


def test_memory_is_bounded() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, subjects_max=100)
    for i in range(1000):
        limiter.allow(str(i), now=0.0)
    assert len(limiter._buckets) == 100
