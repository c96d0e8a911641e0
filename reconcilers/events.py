"""The change notifications tandem sends the app, derived from what a reconcile did.

Pure: a reconcile's result becomes `record.created|updated|deleted` for each write to
the app side, `record.error` for a parked record and `record.conflict` for each conflict
resolved, each with a unique id the receiver can deduplicate on.
"""

from __future__ import annotations

import uuid
from typing import Any

from reconcilers.model import Op, Side
from reconcilers.reconcile import Outcome, Result

_KINDS = {Op.CREATE: "record.created", Op.UPDATE: "record.updated", Op.DELETE: "record.deleted"}


def events_for(binding: str, result: Result, *, at: float) -> list[dict[str, Any]]:
    base = {"binding": binding, "app_id": result.app_id, "external_id": result.external_id, "at": at}
    events = [
        {**base, "type": _KINDS[write.op], "fields": write.values} for write in result.writes if write.side is Side.APP
    ]
    if result.outcome is Outcome.ERROR and result.action == "parked":
        events.append({**base, "type": "record.error", "error": result.error})
    events.extend(
        {
            **base,
            "type": "record.conflict",
            "field": conflict.field,
            "app": conflict.app,
            "external": conflict.external,
            "winner": conflict.winner.value,
        }
        for conflict in result.conflicts
    )
    return [{"id": uuid.uuid4().hex, **event} for event in events]
