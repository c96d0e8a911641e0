"""The three-way merge of DESIGN.md, row by row, and its properties."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcilers.canonical import FieldType
from reconcilers.model import ConflictPolicy, Direction, FieldMap, Flow, Op, Policy, Side
from reconcilers.plan import DELETED_FIELD, LinkChange, Plan, Write, plan

POLICY = Policy(fields=(FieldMap("t", "title"),))


def _plan(app: Any, ext: Any, base: Any, *, linked: bool = True, policy: Policy = POLICY) -> Plan:
    return plan(app=app, external=ext, base=base, linked=linked, policy=policy)


@pytest.mark.parametrize(
    ("app", "ext", "base", "writes", "link"),
    [
        pytest.param({"t": "a"}, {"t": "a"}, {"t": "a"}, (), LinkChange.KEEP, id="in-sync"),
        pytest.param({"t": "a"}, {"t": "a"}, {"t": "x"}, (), LinkChange.SAVE, id="both-agree-refresh-base"),
        pytest.param(
            {"t": "a"}, {"t": "b"}, {"t": "b"},
            (Write(Side.EXTERNAL, Op.UPDATE, {"t": "a"}),), LinkChange.SAVE, id="app-changed",
        ),
        pytest.param(
            {"t": "a"}, {"t": "b"}, {"t": "a"},
            (Write(Side.APP, Op.UPDATE, {"t": "b"}),), LinkChange.SAVE, id="external-changed",
        ),
        pytest.param(
            {"t": "a"}, {"t": "b"}, {"t": "x"},
            (Write(Side.EXTERNAL, Op.UPDATE, {"t": "a"}),), LinkChange.SAVE, id="conflict-app-wins",
        ),
    ],
)  # fmt: skip
def test_merge_table(app, ext, base, writes, link):
    decided = _plan(app, ext, base)
    assert decided.writes == writes
    assert decided.link is link


def test_conflict_is_recorded_with_all_three_values():
    decided = _plan({"t": "a"}, {"t": "b"}, {"t": "x"})
    (conflict,) = decided.conflicts
    assert (conflict.field, conflict.app, conflict.external, conflict.base) == ("t", "a", "b", "x")
    assert conflict.winner is Side.APP


def test_external_wins_policy():
    policy = Policy(fields=POLICY.fields, conflict=ConflictPolicy.EXTERNAL_WINS)
    decided = _plan({"t": "a"}, {"t": "b"}, {"t": "x"}, policy=policy)
    assert decided.writes == (Write(Side.APP, Op.UPDATE, {"t": "b"}),)
    assert decided.conflicts[0].winner is Side.EXTERNAL


@pytest.mark.parametrize(
    ("direction", "app", "ext", "base", "writes"),
    [
        pytest.param(Direction.TO_APP, {"t": "a"}, {"t": "b"}, {"t": "b"},
                     (Write(Side.APP, Op.UPDATE, {"t": "b"}),), id="to-app-external-authoritative"),
        pytest.param(Direction.TO_EXTERNAL, {"t": "a"}, {"t": "b"}, {"t": "a"},
                     (Write(Side.EXTERNAL, Op.UPDATE, {"t": "a"}),), id="to-external-app-authoritative"),
        pytest.param(Direction.TO_APP, {"t": "a"}, {"t": "a"}, {"t": "x"}, (), id="to-app-agree"),
    ],
)  # fmt: skip
def test_directions_only_write_where_allowed(direction, app, ext, base, writes):
    policy = Policy(fields=(FieldMap("t", "title", direction=direction),))
    decided = _plan(app, ext, base, policy=policy)
    assert decided.writes == writes
    assert not decided.conflicts


def test_pairing_without_base_uses_policy_and_records_no_conflict():
    decided = _plan({"t": "a"}, {"t": "b"}, None, linked=False)
    assert decided.writes == (Write(Side.EXTERNAL, Op.UPDATE, {"t": "a"}),)
    assert decided.link is LinkChange.SAVE
    assert decided.reason == "pair"
    assert not decided.conflicts


def test_pairing_keeps_a_value_over_an_empty_one_whatever_the_policy():
    policy = Policy(fields=(FieldMap("t", "title"), FieldMap("n", "note")))
    decided = _plan({"t": "a", "n": None}, {"t": "a", "n": "keep"}, None, linked=False, policy=policy)
    assert decided.writes == (Write(Side.APP, Op.UPDATE, {"n": "keep"}),)


def test_pairing_of_equal_records_writes_nothing_but_links():
    decided = _plan({"t": "a"}, {"t": "a"}, None, linked=False)
    assert decided.writes == ()
    assert decided.link is LinkChange.SAVE


@pytest.mark.parametrize(
    ("creates", "app", "ext", "expected"),
    [
        pytest.param(Flow.BOTH, {"t": "a"}, None, Write(Side.EXTERNAL, Op.CREATE, {"t": "a"}), id="app-only"),
        pytest.param(Flow.BOTH, None, {"t": "b"}, Write(Side.APP, Op.CREATE, {"t": "b"}), id="external-only"),
        pytest.param(Flow.TO_APP, {"t": "a"}, None, None, id="to-app-only-blocks-external-create"),
        pytest.param(Flow.TO_EXTERNAL, None, {"t": "b"}, None, id="to-external-only-blocks-app-create"),
        pytest.param(Flow.NONE, {"t": "a"}, None, None, id="none"),
    ],
)  # fmt: skip
def test_creates_policy(creates, app, ext, expected):
    policy = Policy(fields=POLICY.fields, creates=creates)
    decided = _plan(app, ext, None, linked=False, policy=policy)
    assert decided.writes == ((expected,) if expected else ())


def test_create_sends_only_fields_allowed_towards_that_side():
    policy = Policy(
        fields=(FieldMap("t", "title"), FieldMap("n", "note", direction=Direction.TO_APP)),
    )
    decided = _plan({"t": "a", "n": "x"}, None, None, linked=False, policy=policy)
    assert decided.writes == (Write(Side.EXTERNAL, Op.CREATE, {"t": "a"}),)


@pytest.mark.parametrize(
    ("deletes", "app", "ext", "writes", "link"),
    [
        pytest.param(Flow.BOTH, {"t": "a"}, None, (Write(Side.APP, Op.DELETE),), LinkChange.DROP,
                     id="external-deleted-propagates"),
        pytest.param(Flow.BOTH, None, {"t": "a"}, (Write(Side.EXTERNAL, Op.DELETE),), LinkChange.DROP,
                     id="app-deleted-propagates"),
        pytest.param(Flow.TO_EXTERNAL, {"t": "a"}, None, (), LinkChange.TOMBSTONE,
                     id="external-deletion-kept-from-app"),
        pytest.param(Flow.NONE, None, {"t": "a"}, (), LinkChange.TOMBSTONE, id="deletes-none"),
        pytest.param(Flow.BOTH, None, None, (), LinkChange.DROP, id="both-gone"),
    ],
)  # fmt: skip
def test_deletes_policy(deletes, app, ext, writes, link):
    policy = Policy(fields=POLICY.fields, deletes=deletes)
    decided = _plan(app, ext, {"t": "a"}, policy=policy)
    assert decided.writes == writes
    assert decided.link is link


def test_delete_against_edit_recreates_and_records_conflict():
    decided = _plan({"t": "edited"}, None, {"t": "a"})
    assert decided.writes == (Write(Side.EXTERNAL, Op.CREATE, {"t": "edited"}),)
    assert decided.conflicts[0].field == DELETED_FIELD
    assert decided.link is LinkChange.SAVE


def test_delete_against_edit_on_external_recreates_in_app():
    decided = _plan(None, {"t": "edited"}, {"t": "a"})
    assert decided.writes == (Write(Side.APP, Op.CREATE, {"t": "edited"}),)


def test_new_field_missing_from_base_is_not_a_conflict():
    policy = Policy(fields=(FieldMap("t", "title"), FieldMap("d", "done")))
    decided = _plan({"t": "a", "d": 1}, {"t": "a", "d": 0}, {"t": "a"}, policy=policy)
    assert decided.writes == (Write(Side.EXTERNAL, Op.UPDATE, {"d": 1}),)
    assert not decided.conflicts


# --- properties ----------------------------------------------------------------------

VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["a", "b", "c"]))
FIELDS = ("x", "y", "z")
RECORDS = st.fixed_dictionaries(dict.fromkeys(FIELDS, VALUES))
POLICIES = st.builds(
    lambda directions, conflict, creates, deletes: Policy(
        fields=tuple(
            FieldMap(name, f"ext_{name}", FieldType.AUTO, direction)
            for name, direction in zip(FIELDS, directions, strict=True)
        ),
        conflict=conflict,
        creates=creates,
        deletes=deletes,
    ),
    st.tuples(*(st.sampled_from(Direction) for _ in FIELDS)),
    st.sampled_from(ConflictPolicy),
    st.sampled_from(Flow),
    st.sampled_from(Flow),
)


def _apply(decided: Plan, app: Any, ext: Any, base: Any, linked: bool) -> Any:
    """Carry a plan out on in-memory sides, as the reconciler would."""
    sides = {Side.APP: app, Side.EXTERNAL: ext}
    for write in decided.writes:
        if write.op is Op.DELETE:
            sides[write.side] = None
        elif write.op is Op.CREATE:
            sides[write.side] = {name: write.values.get(name) for name in FIELDS}
        else:
            current = sides[write.side]
            assert current is not None
            sides[write.side] = {**current, **write.values}
    match decided.link:
        case LinkChange.DROP:
            base, linked = None, False
        case LinkChange.SAVE:
            base, linked = decided.base, True
        case LinkChange.TOMBSTONE | LinkChange.KEEP:
            pass
    return sides[Side.APP], sides[Side.EXTERNAL], base, linked


@settings(max_examples=400)
@given(
    app=st.one_of(st.none(), RECORDS),
    ext=st.one_of(st.none(), RECORDS),
    base=st.one_of(st.none(), RECORDS),
    linked=st.booleans(),
    policy=POLICIES,
)
def test_applying_a_plan_then_planning_again_writes_nothing(app, ext, base, linked, policy):
    if not linked:
        base = None
    first = plan(app=app, external=ext, base=base, linked=linked, policy=policy)
    app2, ext2, base2, linked2 = _apply(first, app, ext, base, linked)
    second = plan(app=app2, external=ext2, base=base2, linked=linked2, policy=policy)
    if first.writes and any(w.op is Op.CREATE for w in first.writes):
        # A created record lacks the fields not sent to it; directional fields settle once.
        app3, ext3, base3, linked3 = _apply(second, app2, ext2, base2, linked2)
        second = plan(app=app3, external=ext3, base=base3, linked=linked3, policy=policy)
    assert second.writes == ()
    assert not second.conflicts


@settings(max_examples=300)
@given(app=RECORDS, ext=RECORDS, base=RECORDS, policy=POLICIES)
def test_both_sides_hold_the_same_values_after_a_merge(app, ext, base, policy):
    decided = plan(app=app, external=ext, base=base, linked=True, policy=policy)
    app2, ext2, _, _ = _apply(decided, app, ext, base, True)
    assert app2 == ext2


@settings(max_examples=300)
@given(app=RECORDS, ext=RECORDS, base=RECORDS, policy=POLICIES)
def test_the_echo_of_our_own_write_plans_nothing(app, ext, base, policy):
    """After tandem writes, the other side's notification of that write changes nothing."""
    decided = plan(app=app, external=ext, base=base, linked=True, policy=policy)
    app2, ext2, base2, _ = _apply(decided, app, ext, base, True)
    echo = plan(app=app2, external=ext2, base=base2, linked=True, policy=policy)
    assert echo.writes == ()
    assert echo.link is LinkChange.KEEP
