"""The batch path's pure decisions agree with the plan the reconcile would make."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from connectors.base import Record, RecordId
from reconcilers.batch import listed_creations
from reconcilers.canonical import FieldType, fingerprint
from reconcilers.mapping import MappingError, view
from reconcilers.model import Direction, FieldMap, Flow, Link, LinkState, Op, Policy, Side
from reconcilers.plan import LinkChange, plan

values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["a", "b", "1", "true", "x y"]))
fields = st.tuples(st.sampled_from(list(Direction)), st.sampled_from([FieldType.AUTO, FieldType.INT, FieldType.BOOL]))


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    drawn = draw(st.lists(fields, min_size=1, max_size=3))
    maps = tuple(FieldMap(f"f{i}", f"nested.f{i}", type=kind, direction=way) for i, (way, kind) in enumerate(drawn))
    return Policy(fields=maps, creates=draw(st.sampled_from(list(Flow))), match=(maps[0].name,))


def _record(side: Side, number: int, raw: dict[str, Any]) -> Record:
    if side is Side.APP:
        return Record(RecordId(str(number)), raw)
    return Record(RecordId(str(number)), {"nested": raw})


@given(policy=policies(), side=st.sampled_from(list(Side)), rows=st.lists(st.lists(values, min_size=3, max_size=3)))
def test_a_listed_page_is_created_exactly_as_the_plan_would_create_each_record(policy, side, rows):
    records = [_record(side, n, {f"f{i}": value for i, value in enumerate(row)}) for n, row in enumerate(rows)]
    creations, rest = listed_creations(records, side, policy)

    created = {creation.source.id: creation for creation in creations}
    assert set(created) | {record_id for _, record_id in rest.keys} == {record.id for record in records}
    assert not set(created) & {record_id for _, record_id in rest.keys}
    for record in records:
        try:
            mapped = view(record, side, policy)
        except MappingError:
            assert record.id not in created  # left for the reconcile to park, with its error
            continue
        decided = plan(
            app=mapped if side is Side.APP else None,
            external=mapped if side is Side.EXTERNAL else None,
            base=None,
            linked=False,
            policy=policy,
        )
        if decided.link is not LinkChange.SAVE:
            assert record.id not in created  # creates not allowed there: the reconcile says so
            continue
        (write,) = decided.writes
        assert write.op is Op.CREATE and write.side is side.other
        creation = created[record.id]
        assert creation.values == write.values == decided.base
        assert creation.encoded == fingerprint(write.values)


def test_a_record_one_of_our_creates_in_flight_could_have_made_is_left_to_the_reconcile():
    policy = Policy(fields=(FieldMap("title", "title"),), match=("title",))
    intent = Link(
        row=1, binding="b", app_id=RecordId("7"), external_id=None, state=LinkState.PENDING,
        intent_side=Side.EXTERNAL, intent_values={"title": "made"},
    )  # fmt: skip
    listed = [Record(RecordId("e1"), {"title": "made"}), Record(RecordId("e2"), {"title": "other"})]
    creations, rest = listed_creations(listed, Side.EXTERNAL, policy, in_flight=[intent], now=0.0)
    assert [creation.source.id for creation in creations] == ["e2"]
    assert rest.keys == [(Side.EXTERNAL, RecordId("e1"))]
