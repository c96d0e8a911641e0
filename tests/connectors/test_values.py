"""What a connector refuses to take in: values too deep, text that is not Unicode."""

import json

import pytest

from connectors.values import MAX_DEPTH, bad_text, loads_deep, problem_of


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        pytest.param({"title": "plain", "n": 1, "ok": True}, None, id="flat"),
        pytest.param({"meta": {"a": [{"b": "é"}]}}, None, id="nested-a-little"),
        pytest.param({"deep": _nested(MAX_DEPTH - 1)}, None, id="at-the-limit"),
        pytest.param({"deep": _nested(MAX_DEPTH)}, "nested deeper", id="past-the-limit"),
        pytest.param({"title": "bad \ud800"}, "not valid Unicode", id="lone-surrogate-value"),
        pytest.param({"ok": [{"k\udfff": 1}]}, "field name is not valid Unicode", id="lone-surrogate-key"),
    ],
)
def test_problem_of(fields, problem):
    found = problem_of(fields)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_bad_text_is_only_text_utf8_cannot_hold():
    assert not bad_text("plain") and not bad_text("héllo ☃")
    assert bad_text("x\ud800")


def test_a_body_too_deep_for_json_loads_is_read_all_the_same():
    body = '{"items": [' + "[" * 5000 + "]" * 5000 + "]}"
    with pytest.raises(RecursionError):
        json.loads(body)
    decoded = loads_deep(body)
    assert problem_of(decoded) is not None
