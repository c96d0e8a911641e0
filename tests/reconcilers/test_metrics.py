"""The sync metrics: a page of observations at once lands as each would alone."""

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from reconcilers.metrics import ManyHistogram


def _samples(registry: CollectorRegistry) -> list[str]:
    """The exposition but for the creation time, which differs between two metrics."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_many_observations_at_once_fill_the_buckets_and_sum_as_one_at_a_time():
    # On a bound, between bounds, below the first, past the last (+Inf), zero, repeats.
    amounts = [0.005, 0.007, 0.0001, 0.0, 75.0, 0.5, 0.5, 0.5, 2.4999, 60.0]
    at_once, one_by_one = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.005, 0.01, 0.5, 2.5, 60)
    ManyHistogram("work", "w", ["binding"], buckets=buckets, registry=at_once).labels("b").observe_many(amounts)
    single = Histogram("work", "w", ["binding"], buckets=buckets, registry=one_by_one).labels("b")
    for amount in amounts:
        single.observe(amount)
    assert _samples(at_once) == _samples(one_by_one)
    assert 'work_count{binding="b"} 10.0' in _samples(at_once)
