"""`tandem plan` as text: one line a write, in words, and what would be parked."""

from __future__ import annotations

import json
from typing import Any

from reconcilers.dryrun import DryRun


def render_plan(results: list[DryRun]) -> str:
    lines: list[str] = []
    for result in results:
        count = len(result.writes)
        lines.append(
            f"{result.binding}: " + (f"{count} {_plural(count, 'write')} planned" if count else "nothing to write")
        )
        lines.extend(f"  {describe_write(write)}" for write in result.writes)
        for parked in result.parked:
            lines.append(f"  would park {_pair(parked)}: {parked['error']}")
        if result.still_parked:
            still = len(result.still_parked)
            lines.append(
                f"  {still} {_plural(still, 'record')} parked and unchanged since, left alone until"
                " they change (`tandem status` lists them)"
            )
        if result.conflicts:
            lines.append(f"  {result.conflicts} {_plural(result.conflicts, 'field conflict')} would be resolved")
        if result.deletes_blocked:
            lines.append(f"  {result.deletes_blocked} deletions held back by the mass-delete guard")
        if not result.complete:
            lines.append("  a listing was incomplete: no deletions inferred")
    return "\n".join(lines)


def describe_write(write: dict[str, Any]) -> str:
    op, side = write.get("op"), write.get("side")
    if op == "settle-intent":
        return f"settle an interrupted create ({_pair(write)})"
    fields = json.dumps(write.get("fields", {}), default=str, ensure_ascii=False)
    if op == "create":
        source = "external" if side == "app" else "app"
        origin = write.get(f"{source}_id")
        return f"create in {side}" + (f" from {source} {origin}" if origin is not None else "") + f": {fields}"
    own = write.get(f"{side}_id")
    if op == "delete":
        return f"delete {side} {own} ({_pair(write)})"
    return f"update {side} {own}: {fields}"


def _pair(item: dict[str, Any]) -> str:
    ids = [f"{side} {item[f'{side}_id']}" for side in ("app", "external") if item.get(f"{side}_id") is not None]
    return ", ".join(ids) or "no id yet"


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"
