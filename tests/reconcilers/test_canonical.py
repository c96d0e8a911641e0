"""Canonical values: a representation difference is never a change."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconcilers.canonical import CoercionError, FieldType, canonical, canonical_json


@pytest.mark.parametrize(
    ("left", "right", "kind"),
    [
        pytest.param(1, True, FieldType.BOOL, id="sqlite-int-vs-json-bool"),
        pytest.param("false", 0, FieldType.BOOL, id="text-vs-int-bool"),
        pytest.param("5", 5, FieldType.INT, id="text-int"),
        pytest.param(5.0, 5, FieldType.INT, id="float-int"),
        pytest.param("2.50", 2.5, FieldType.FLOAT, id="text-float"),
        pytest.param('{"b": 1, "a": [1, 2]}', {"a": [1, 2], "b": 1}, FieldType.JSON, id="json-key-order"),
        pytest.param("2026-01-02T03:04:05Z", "2026-01-02 04:04:05+01:00", FieldType.DATETIME, id="tz"),
        pytest.param(1767323045, "2026-01-02T03:04:05+00:00", FieldType.DATETIME, id="epoch"),
        pytest.param(7, "7", FieldType.STR, id="str-of-int"),
        pytest.param(3.0, 3, FieldType.AUTO, id="auto-integral-float"),
    ],
)
def test_same_meaning_same_canonical_value(left, right, kind):
    assert canonical(left, kind) == canonical(right, kind)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        pytest.param("yes please", FieldType.BOOL, id="bool"),
        pytest.param("12abc", FieldType.INT, id="int"),
        pytest.param("1.5", FieldType.INT, id="fractional-int"),
        pytest.param("{not json", FieldType.JSON, id="json"),
        pytest.param("next tuesday", FieldType.DATETIME, id="datetime"),
        pytest.param(float("nan"), FieldType.FLOAT, id="nan"),
    ],
)
def test_wrong_type_is_a_clear_error(value, kind):
    with pytest.raises(CoercionError):
        canonical(value, kind)


def test_none_stays_none_for_every_type():
    assert all(canonical(None, kind) is None for kind in FieldType)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_canonical_json_writes_what_json_dumps_writes(value):
    # Stored bases and digests were written by `json.dumps` with these settings: an
    # upgrade must read every one of them as unchanged.
    assert canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
