"""Helpers for JSON documents that connectors write whole (PUT) rather than patch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def deep_merge(target: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`target` with `changes` laid over it, nested objects merged key by key."""
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            target[key] = deep_merge(dict(target[key]), value)
        else:
            target[key] = value
    return target
