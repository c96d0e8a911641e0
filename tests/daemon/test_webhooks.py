"""Webhook signatures and id extraction, pure."""

import pytest

from daemon.webhooks import WebhookSpec, ids_in, sign, verify

SPEC = WebhookSpec(secret="s3cret-webhook-key")


def test_a_correct_signature_passes_and_any_change_fails():
    body = b'{"id": 5}'
    assert verify(SPEC, body, {"X-Tandem-Signature": sign(SPEC.secret or "", body)}, now=0) is None
    assert verify(SPEC, body + b" ", {"X-Tandem-Signature": sign(SPEC.secret or "", body)}, now=0)
    assert verify(SPEC, body, {}, now=0) == "bad or missing X-Tandem-Signature"


def test_no_secret_means_no_check():
    assert verify(WebhookSpec(), b"{}", {}, now=0) is None


def test_timestamps_outside_the_tolerance_are_refused():
    spec = WebhookSpec(secret="k3y-value", timestamp_header="X-Tandem-Timestamp", tolerance=300)
    body = b"{}"
    fresh = {"X-Tandem-Timestamp": "1000", "X-Tandem-Signature": sign("k3y-value", body, timestamp="1000")}
    assert verify(spec, body, fresh, now=1200) is None
    assert verify(spec, body, fresh, now=1400) == "X-Tandem-Timestamp outside the tolerance"
    unsigned_time = {"X-Tandem-Timestamp": "1300", "X-Tandem-Signature": fresh["X-Tandem-Signature"]}
    assert verify(spec, body, unsigned_time, now=1300) is not None  # the timestamp is signed too


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_a_signed_timestamp_that_names_no_time_is_refused(stamp):
    spec = WebhookSpec(secret="k3y-value", timestamp_header="X-Tandem-Timestamp", tolerance=300)
    headers = {"X-Tandem-Timestamp": stamp, "X-Tandem-Signature": sign("k3y-value", b"{}", timestamp=stamp)}
    assert verify(spec, b"{}", headers, now=1200) == "missing or malformed X-Tandem-Timestamp"


@pytest.mark.parametrize(
    ("payload", "path", "expected"),
    [
        pytest.param({"id": 5}, "id", ["5"], id="one"),
        pytest.param({"data": {"ids": [1, "a", None, True]}}, "data.ids", ["1", "a"], id="list-nested"),
        pytest.param({"event": "ping"}, "id", None, id="absent-poll-now"),
        pytest.param([1, 2], "id", None, id="not-an-object"),
    ],
)
def test_ids_in(payload, path, expected):
    assert ids_in(payload, path) == expected
