"""A write the table would refuse for a null is known before it is sent, the same for run and plan."""

import pytest

from connectors.base import Capabilities
from reconcilers.mapping import null_refusal
from reconcilers.model import FieldMap, Op, Policy, Side

POLICY = Policy(fields=(FieldMap("title", "name"), FieldMap("done", "completed")))
TABLE = Capabilities(not_null=frozenset({"title", "done", "owner"}), defaulted=frozenset({"done", "owner"}))


@pytest.mark.parametrize(
    ("values", "op", "expected"),
    [
        pytest.param({"title": "a", "done": False}, Op.CREATE, None, id="all-given"),
        pytest.param({"title": "a", "done": None}, Op.CREATE, "done would be null", id="null-despite-default"),
        pytest.param({"title": None}, Op.UPDATE, "title would be null", id="update-to-null"),
        pytest.param({"done": True}, Op.UPDATE, None, id="update-leaves-title-alone"),
        pytest.param({"done": True}, Op.CREATE, "title must hold a value", id="create-without-title"),
        pytest.param({}, Op.DELETE, None, id="delete"),
    ],
)
def test_a_null_into_a_not_null_column_is_refused_before_the_write(values, op, expected):
    refusal = null_refusal(values, op, Side.APP, POLICY, TABLE)
    assert (refusal is None) if expected is None else (refusal is not None and refusal.startswith(expected))


def test_a_side_that_says_nothing_of_its_columns_refuses_nothing():
    assert null_refusal({"title": None}, Op.CREATE, Side.EXTERNAL, POLICY, Capabilities()) is None
