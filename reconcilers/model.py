"""The nouns of a binding: sides, policies, field maps, links and the plan's writes."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from connectors.base import RecordId
from reconcilers.canonical import Canon, FieldType


class Side(enum.StrEnum):
    APP = "app"
    EXTERNAL = "external"

    @property
    def other(self) -> Side:
        return Side.EXTERNAL if self is Side.APP else Side.APP


class Op(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class Direction(enum.StrEnum):
    """Which way a field's values may flow."""

    BOTH = "both"
    TO_APP = "to-app"
    TO_EXTERNAL = "to-external"

    def allows(self, side: Side) -> bool:
        """May values be written to `side`?"""
        # Identity tests, not text: this runs for every field of every record written.
        return self is Direction.BOTH or (self is Direction.TO_APP) is (side is Side.APP)


class Flow(enum.StrEnum):
    """Which way creates or deletes propagate."""

    BOTH = "both"
    TO_APP = "to-app"
    TO_EXTERNAL = "to-external"
    NONE = "none"

    def allows(self, side: Side) -> bool:
        """May a create or delete be carried out on `side`?"""
        if self is Flow.BOTH or self is Flow.NONE:
            return self is Flow.BOTH
        return (self is Flow.TO_APP) is (side is Side.APP)


class ConflictPolicy(enum.StrEnum):
    APP_WINS = "app-wins"
    EXTERNAL_WINS = "external-wins"

    @property
    def winner(self) -> Side:
        return Side.APP if self is ConflictPolicy.APP_WINS else Side.EXTERNAL


@dataclass(frozen=True, slots=True)
class FieldMap:
    """One mapped field: the app column `name` and the external field path `external`."""

    name: str
    external: str
    type: FieldType = FieldType.AUTO
    direction: Direction = Direction.BOTH
    external_path: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """`external` split at its dots, once: every record read goes through it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "external_path", tuple(self.external.split(".")))


@dataclass(frozen=True, slots=True)
class DeleteGuard:
    """Deletions within `window` seconds, from every path (resyncs, change feeds, webhooks),
    wait for an operator once they are more than `min_count` and more than `max_fraction`
    of the links, or, unless `max_fraction` is 1 (any share may go), once they would
    delete every link of a binding that has two or more."""

    max_fraction: float = 0.25
    min_count: int = 3
    window: float = 600.0

    def blocks(self, deletes: int, links: int) -> bool:
        """Would `deletes` deletions out of `links` links (counted before any of them) be too many?"""
        if deletes >= links >= 2 and self.max_fraction < 1:
            return True  # a side emptied whole: the shape of a broken listing or a wiped table
        return deletes > self.min_count and deletes > self.max_fraction * links


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything the pure decision needs to know about a binding."""

    fields: tuple[FieldMap, ...]
    match: tuple[str, ...] = ()
    conflict: ConflictPolicy = ConflictPolicy.APP_WINS
    creates: Flow = Flow.BOTH
    deletes: Flow = Flow.BOTH
    delete_guard: DeleteGuard = field(default_factory=DeleteGuard)
    _writable: dict[Side, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Asked for every record written: worked out once.
        writable = {side: tuple(f.name for f in self.fields if f.direction.allows(side)) for side in Side}
        object.__setattr__(self, "_writable", writable)

    def writable_to(self, side: Side) -> tuple[str, ...]:
        """The fields whose direction allows writing them to `side`, in declared order."""
        return self._writable[side]

    def field(self, name: str) -> FieldMap:
        for item in self.fields:
            if item.name == name:
                return item
        raise KeyError(name)


Values = Mapping[str, Canon]
"""Mapped values: app field name → canonical value."""


class LinkState(enum.StrEnum):
    SYNCED = "synced"
    PENDING = "pending"  # a create is under way: a write intent
    ERROR = "error"  # parked: one side refused the record
    CONFLICT = "conflict"  # the last sync resolved a conflict (kept for status)
    DELETED = "deleted"  # one side is gone and `deletes` keeps the other


@dataclass(frozen=True, slots=True)
class Link:
    """The pairing of an app record with its external twin, and their last agreement.

    Either id may be None while a create is pending or a parked record has no twin yet.
    """

    row: int
    binding: str
    app_id: RecordId | None
    external_id: RecordId | None
    state: LinkState
    base: dict[str, Canon] | None = None
    error: str | None = None
    failed_fingerprint: str | None = None
    intent_side: Side | None = None
    intent_values: dict[str, Canon] | None = None
    intent_id: RecordId | None = None
    """The id the pending create gave its record, where the side takes chosen ids."""
    synced_at: float | None = None
    updated_at: float | None = None


@dataclass(frozen=True, slots=True)
class LinkDigest:
    """What a resync needs of a link: ids, state and the base as stored text."""

    row: int
    app_id: RecordId | None
    external_id: RecordId | None
    state: LinkState
    base: str | None
    updated_at: float

    COLUMNS: ClassVar[str] = "row, app_id, external_id, state, base, updated_at"

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> LinkDigest:
        """From a row of `COLUMNS` as the links table holds them."""
        return cls(
            row=row[0],
            app_id=RecordId(row[1]) if row[1] is not None else None,
            external_id=RecordId(row[2]) if row[2] is not None else None,
            state=LinkState(row[3]),
            base=row[4],
            updated_at=row[5],
        )
