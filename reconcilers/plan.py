"""The decision: from both sides' mapped values and the link's base, what to write.

Pure and synchronous: no clock, no I/O, no logging. The reconciler observes, calls
`plan`, and carries the plan out. Every rule of the three-way merge in DESIGN.md
lives here and nowhere else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from reconcilers.canonical import Canon
from reconcilers.mapping import writable
from reconcilers.model import Direction, Op, Policy, Side, Values


class LinkChange(enum.StrEnum):
    KEEP = "keep"  # the link is right as it is
    SAVE = "save"  # store the plan's base as the new agreement (or make the link)
    DROP = "drop"  # both records are gone: forget the pair
    TOMBSTONE = "tombstone"  # one side is gone and `deletes` keeps the other


@dataclass(frozen=True, slots=True)
class Write:
    side: Side
    op: Op
    values: dict[str, Canon] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """Both sides changed a field since the base, to different values."""

    field: str
    app: Canon
    external: Canon
    base: Canon
    winner: Side


DELETED_FIELD = "*record*"
"""The `field` of a conflict between a deletion on one side and an edit on the other."""


@dataclass(frozen=True, slots=True)
class Plan:
    writes: tuple[Write, ...] = ()
    base: dict[str, Canon] | None = None
    link: LinkChange = LinkChange.KEEP
    conflicts: tuple[FieldConflict, ...] = ()
    reason: str = "in-sync"

    @property
    def is_noop(self) -> bool:
        return not self.writes and self.link is LinkChange.KEEP


class _Missing:
    """Marks a field the base does not know (a new field, or a pair never synced)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def plan(
    *,
    app: Values | None,
    external: Values | None,
    base: Values | None,
    linked: bool,
    policy: Policy,
) -> Plan:
    """Decide the writes that bring both sides and the link into agreement."""
    match app, external, linked:
        case None, None, True:
            return Plan(link=LinkChange.DROP, reason="both-gone")
        case None, None, False:
            return Plan(reason="nothing")
        case _, None, False:
            assert app is not None
            return _create(app, on=Side.EXTERNAL, policy=policy)
        case None, _, False:
            assert external is not None
            return _create(external, on=Side.APP, policy=policy)
        case _, None, True:
            assert app is not None
            return _one_gone(app, survivor=Side.APP, base=base, policy=policy)
        case None, _, True:
            assert external is not None
            return _one_gone(external, survivor=Side.EXTERNAL, base=base, policy=policy)
    assert app is not None
    assert external is not None
    return merge(app=app, external=external, base=base if linked else None, policy=policy)


def create_payload(values: Values, *, on: Side, policy: Policy) -> dict[str, Canon] | None:
    """What creating a record with no twin and no link writes to `on`: its writable
    values; None where `creates` does not allow creating there. The whole plan of such a
    record, which a batch import decides without building the plan."""
    if not policy.creates.allows(on):
        return None
    return writable(values, on, policy)


def _create(values: Values, *, on: Side, policy: Policy) -> Plan:
    payload = create_payload(values, on=on, policy=policy)
    if payload is None:
        return Plan(reason=f"creates-to-{on.value}-disabled")
    return Plan(
        writes=(Write(on, Op.CREATE, payload),),
        base=payload,
        link=LinkChange.SAVE,
        reason=f"create-{on.value}",
    )


def _one_gone(survivor_values: Values, *, survivor: Side, base: Values | None, policy: Policy) -> Plan:
    gone = survivor.other
    if _edited_since(survivor_values, base=base, side=survivor, policy=policy):
        # A deletion against an edit: the edit wins and the record comes back.
        payload = writable(survivor_values, gone, policy)
        conflict = FieldConflict(
            DELETED_FIELD,
            app=survivor_values if survivor is Side.APP else None,
            external=survivor_values if survivor is Side.EXTERNAL else None,
            base=dict(base) if base is not None else None,
            winner=survivor,
        )
        return Plan(
            writes=(Write(gone, Op.CREATE, payload),),
            base=payload,
            link=LinkChange.SAVE,
            conflicts=(conflict,),
            reason=f"recreate-{gone.value}",
        )
    if policy.deletes.allows(survivor):
        return Plan(writes=(Write(survivor, Op.DELETE),), link=LinkChange.DROP, reason=f"delete-{survivor.value}")
    return Plan(link=LinkChange.TOMBSTONE, reason=f"deletes-to-{survivor.value}-disabled")


def _edited_since(values: Values, *, base: Values | None, side: Side, policy: Policy) -> bool:
    if base is None:
        return True  # nothing to compare with: keep the record rather than lose it
    for item in policy.fields:
        if not item.direction.allows(side.other) or item.name not in base:
            continue  # this side's value of the field never flows out
        if values.get(item.name) != base[item.name]:
            return True
    return False


def merge(*, app: Values, external: Values, base: Values | None, policy: Policy) -> Plan:
    """The three-way merge of DESIGN.md, one field at a time."""
    to_app: dict[str, Canon] = {}
    to_external: dict[str, Canon] = {}
    agreed: dict[str, Canon] = {}
    conflicts: list[FieldConflict] = []
    for item in policy.fields:
        a, e = app.get(item.name), external.get(item.name)
        b = MISSING if base is None or item.name not in base else base[item.name]
        winner = _winner(item.direction, a=a, e=e, b=b, policy=policy)
        if winner is None:
            agreed[item.name] = a
            continue
        if winner is Side.APP:
            to_external[item.name] = agreed[item.name] = a
        else:
            to_app[item.name] = agreed[item.name] = e
        if item.direction is Direction.BOTH and b is not MISSING and a != b and e != b:
            conflicts.append(FieldConflict(item.name, app=a, external=e, base=b, winner=winner))
    writes = tuple(
        Write(side, Op.UPDATE, values) for side, values in ((Side.APP, to_app), (Side.EXTERNAL, to_external)) if values
    )
    if base is None:
        link, reason = LinkChange.SAVE, "pair"
    elif writes:
        link, reason = LinkChange.SAVE, "conflict" if conflicts else "update"
    elif dict(base) != agreed:
        link, reason = LinkChange.SAVE, "refresh-base"
    else:
        link, reason = LinkChange.KEEP, "in-sync"
    return Plan(writes=writes, base=agreed, link=link, conflicts=tuple(conflicts), reason=reason)


def _winner(direction: Direction, *, a: Canon, e: Canon, b: Canon, policy: Policy) -> Side | None:
    """Whose value of one field stands; None when both sides already agree."""
    if a == e:
        return None
    if direction is Direction.TO_APP:
        return Side.EXTERNAL
    if direction is Direction.TO_EXTERNAL:
        return Side.APP
    if b is MISSING:
        # Never agreed before (a new pair or a new field): a value beats an empty one,
        # so pairing loses nothing; otherwise the policy decides.
        if a is None:
            return Side.EXTERNAL
        if e is None:
            return Side.APP
        return policy.conflict.winner
    if e == b:
        return Side.APP
    if a == b:
        return Side.EXTERNAL
    return policy.conflict.winner
