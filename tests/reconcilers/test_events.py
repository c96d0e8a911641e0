"""Which notifications a reconcile's result makes."""

from connectors.base import RecordId
from reconcilers.events import events_for
from reconcilers.model import Op, Side
from reconcilers.plan import FieldConflict, Write
from reconcilers.reconcile import Outcome, Result


def _result(**changes) -> Result:
    return Result(Outcome.SUCCESS, "update", app_id=RecordId("1"), external_id=RecordId("x"), **changes)


def test_writes_to_the_app_become_events_and_writes_to_the_external_side_do_not():
    result = _result(writes=(Write(Side.APP, Op.UPDATE, {"t": "a"}), Write(Side.EXTERNAL, Op.UPDATE, {"n": 1})))
    (event,) = events_for("b", result, at=1.0)
    assert event["type"] == "record.updated"
    assert event["fields"] == {"t": "a"}
    assert (event["app_id"], event["external_id"], event["binding"]) == ("1", "x", "b")


def test_parked_records_and_conflicts_are_announced_with_unique_ids():
    conflict = FieldConflict("t", app="a", external="b", base="c", winner=Side.APP)
    parked = Result(Outcome.ERROR, "parked", app_id=RecordId("1"), error="HTTP 422", conflicts=(conflict,))
    events = events_for("b", parked, at=1.0)
    assert [e["type"] for e in events] == ["record.error", "record.conflict"]
    assert events[0]["error"] == "HTTP 422"
    assert len({e["id"] for e in events}) == 2


def test_a_quiet_reconcile_announces_nothing():
    assert events_for("b", _result(), at=1.0) == []
