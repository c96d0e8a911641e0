"""Mapping between native records and mapped values, both ways, without I/O.

A record read from either side becomes a dict keyed by app field name holding
canonical values (its *view*); a set of mapped values to write becomes the native
fields of the side it goes to. External field names may be dotted paths into
nested objects (`fields.Name`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.base import Capabilities, JSONValue, Record
from reconcilers.canonical import COERCIONS, Canon, CoercionError, canonical_json
from reconcilers.model import FieldMap, Op, Policy, Side, Values


@dataclass(frozen=True, slots=True)
class MappingError(ValueError):
    """A record's field could not be read as its declared type."""

    side: Side
    field: str
    reason: str

    def __str__(self) -> str:
        if not self.field:
            return f"{self.side.value} record: {self.reason}"
        return f"{self.side.value} field {self.field!r}: {self.reason}"


def read_path(fields: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = fields
    for part in path:
        # Nearly always a dict: asking that first spares the ABC's slower check.
        if not isinstance(value, dict) and not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def view(record: Record, side: Side, policy: Policy) -> dict[str, Canon]:
    """The canonical mapped values of a record from `side`."""
    if record.problem is not None:
        raise MappingError(side, "", record.problem)
    result: dict[str, Canon] = {}
    fields = record.fields
    app = side is Side.APP
    for item in policy.fields:
        path = item.external_path
        if app:
            raw = fields.get(item.name)
        else:
            raw = fields.get(path[0]) if len(path) == 1 else read_path(fields, path)
        if raw is None:  # `canonical`, inlined: this runs for every field of every record
            result[item.name] = None
            continue
        try:
            result[item.name] = COERCIONS[item.type](raw)
        except CoercionError as exc:
            raise MappingError(side, item.name if app else item.external, str(exc)) from exc
    return result


def writable(values: Values, to: Side, policy: Policy) -> dict[str, Canon]:
    """Only the values whose field direction allows writing them to `to`."""
    return {name: values[name] for name in policy.writable_to(to) if name in values}


def native(values: Values, to: Side, policy: Policy) -> dict[str, JSONValue]:
    """Mapped values as the native fields of `to` (nested for dotted external paths)."""
    if to is Side.APP:
        return dict(values)
    result: dict[str, Any] = {}
    for name, value in values.items():
        *parents, leaf = policy.field(name).external_path
        target = result
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return result


def null_refusal(values: Values, op: Op, to: Side, policy: Policy, table: Capabilities) -> str | None:
    """Why `to` would refuse this write for a null in a NOT NULL field, or None. Checked
    before the write and by `tandem plan` alike, so that both say the same, and a write
    bound to fail is never sent. A default fills a field a create leaves out, never one
    it sets to null (tandem writes every mapped field)."""
    if not table.not_null or op is Op.DELETE:
        return None
    given = {_native_name(policy.field(name), to): value for name, value in values.items()}
    nulled = sorted(name for name in table.not_null if name in given and given[name] is None)
    unmapped = []
    if op is Op.CREATE:
        unmapped = sorted(name for name in table.not_null - table.defaulted if name not in given)
    if nulled:
        return f"{', '.join(nulled)} would be null, which the column refuses (NOT NULL)"
    if unmapped:
        return (
            f"{', '.join(unmapped)} must hold a value (NOT NULL without a default) and no field writes it"
            " here: map it to be written to this side, or give the column a default"
        )
    return None


def match_values(values: Values, policy: Policy, on: Side) -> dict[str, JSONValue]:
    """The `match` fields of a record, keyed by the native names of side `on`."""
    return {_native_name(policy.field(name), on): values[name] for name in policy.match}


def match_key(values: Values, policy: Policy) -> str | None:
    """A hashable key of the match fields; None when any is empty (nothing to pair on)."""
    picked = [values.get(name) for name in policy.match]
    if not picked or None in picked or "" in picked:
        return None
    # A list in `policy.match` order, the same for both sides: cheaper than a sorted dict.
    return canonical_json(picked)


def matching(candidates: Iterable[Record], want: Values, side: Side, policy: Policy) -> list[Record]:
    """Candidates (from `side`) whose match fields equal `want`'s, compared canonically."""
    key = match_key(want, policy)
    found = []
    for record in candidates:
        try:
            if key is not None and match_key(view(record, side, policy), policy) == key:
                found.append(record)
        except MappingError:
            continue  # a record that cannot be read cannot be a match
    return found


def _native_name(item: FieldMap, side: Side) -> str:
    return item.name if side is Side.APP else item.external
