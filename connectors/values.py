"""What no record may carry into tandem: values nested too deeply, text that is not Unicode.

A record nested thousands of levels deep breaks whatever walks it next (canonical forms,
storage, logging) with a RecursionError; a lone surrogate (`"\\ud800"`, which JSON allows
and UTF-8 cannot encode) breaks every write and log line that holds it. Each connector
asks `problem_of` of every record it reads, so such a record is parked with the reason
while every other record goes on; `loads_deep` reads a body too deep for `json.loads`.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from typing import Any

from connectors.base import Record, RecordId

MAX_DEPTH = 64
"""Deeper than any record a sync needs; far below what Python's recursion allows."""

_DEEP_STACK = 256 * 1024 * 1024
_DEEP_RECURSION = 200_000


def taken_in(record_id: RecordId, fields: Mapping[str, Any], version: str | None, label: str) -> Record:
    """The record as read, or, where `problem_of` finds one, an empty record that says it
    (so it is parked with the reason, never half read)."""
    problem = problem_of(fields)
    if problem is not None:
        return Record(record_id, {}, version, f"{label}: {problem}")
    return Record(record_id, fields, version)


def problem_of(fields: Mapping[str, Any]) -> str | None:
    """Why these fields cannot be taken in, or None. Walked without recursion."""
    stack: list[tuple[Any, int]] = [(fields, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and not _encodable(value):
                return "a value holds text that is not valid Unicode (a lone surrogate)"
            continue
        if isinstance(value, dict):
            children: Any = value.items()
            pairs = True
        elif isinstance(value, list):
            children, pairs = value, False
        else:
            continue
        if depth > MAX_DEPTH:
            return f"a value is nested deeper than {MAX_DEPTH} levels"
        for child in children:
            if pairs:
                key, child = child
                if isinstance(key, str) and not key.isascii() and not _encodable(key):
                    return "a field name is not valid Unicode (a lone surrogate)"
            if isinstance(child, str | dict | list):
                stack.append((child, depth + 1))
    return None


def bad_text(value: str) -> bool:
    """Whether a string cannot be stored or shown (a lone surrogate)."""
    return not value.isascii() and not _encodable(value)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def loads_deep(text: str | bytes) -> Any:
    """`json.loads` for a body nested deeper than the interpreter's recursion limit: read
    on a thread of its own with a large stack, the limit raised only meanwhile. Only for
    a body `json.loads` already refused with a RecursionError (rare, and never hot)."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def decode() -> None:
        try:
            result.append(json.loads(text))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    previous_stack = threading.stack_size(_DEEP_STACK)
    previous_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous_limit, _DEEP_RECURSION))
    try:
        thread = threading.Thread(target=decode, name="deep-json")
        thread.start()
        thread.join()
    finally:
        sys.setrecursionlimit(previous_limit)
        threading.stack_size(previous_stack)
    if failure:
        raise failure[0]
    return result[0]
