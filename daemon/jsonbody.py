"""JSON bodies from the outside, read so that no body can crash or stall a handler.

`json.loads` raises `RecursionError`, not `ValueError`, on deeply nested input, and a body
that parses may still be nested deeply enough to break whatever walks it next. Both are a
client's mistake, answered with a 400.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
"""Deeper than any notification or link request needs."""


def load_json(body: bytes | str) -> Any:
    """The parsed body; ValueError naming what is wrong when it is not JSON or too deep."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise ValueError(f"body is nested deeper than {MAX_DEPTH} levels") from None
    if depth(value) > MAX_DEPTH:
        raise ValueError(f"body is nested deeper than {MAX_DEPTH} levels")
    return value


def depth(value: Any) -> int:
    """How deeply lists and objects nest in `value`, counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
