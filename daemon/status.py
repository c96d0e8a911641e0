"""Per-binding status, read from the state database (for `tandem status` and the API)."""

from __future__ import annotations

from typing import Any

from reconcilers.model import Link
from reconcilers.state import StateStore


def link_json(link: Link) -> dict[str, Any]:
    return {
        "app_id": link.app_id,
        "external_id": link.external_id,
        "state": link.state.value,
        "last_synced_at": link.synced_at,
        "updated_at": link.updated_at,
        "error": link.error,
    }


async def binding_status(store: StateStore, name: str) -> dict[str, Any]:
    state = await store.binding_state(name)
    counts = await store.counts(name)
    return {
        "name": name,
        "links": {state: counts.get(state, 0) for state in ("synced", "conflict", "error", "pending", "deleted")},
        "links_total": sum(counts.values()),
        "parked": [link_json(link) for link in await store.parked(name, limit=20)],
        "conflicts_total": await store.conflict_count(name),
        "recent_conflicts": await store.recent_conflicts(name, limit=5),
        "deletes_blocked": state.deletes_blocked,
        "deletes_blocked_since": state.blocked_at,
        "last_resync_at": state.last_resync_at,
        "last_resync_result": state.last_resync_result,
    }


def render_text(statuses: list[dict[str, Any]]) -> str:
    lines = []
    for status in statuses:
        links = ", ".join(f"{k} {v}" for k, v in status["links"].items())
        lines.append(f"{status['name']}: {status['links_total']} links ({links})")
        lines.append(f"  conflicts resolved: {status['conflicts_total']}")
        lines.append(f"  last resync: {status['last_resync_result'] or 'never'}")
        if status["deletes_blocked"]:
            lines.append(
                f"  DELETES BLOCKED: {status['deletes_blocked']} deletions wait for"
                f" `tandem resync --binding {status['name']} --allow-deletes`"
            )
        for parked in status["parked"]:
            lines.append(f"  parked: app {parked['app_id']} / external {parked['external_id']}: {parked['error']}")
    return "\n".join(lines)
