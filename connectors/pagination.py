"""Pagination styles of JSON APIs, as pure steps: which request next, is the listing done.

A cursor passed between pages is a string whatever the style: a page number, an
offset, the server's token, or the absolute URL of the next page. Page-number and
offset listings end on an empty page, never on a short one: a server that caps the
page size below what was asked would otherwise end the listing early, and absence
from a listing that only looked complete would read as deletion.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from connectors.base import PermanentError


class PaginationType(enum.StrEnum):
    NONE = "none"
    PAGE = "page"
    OFFSET = "offset"
    CURSOR = "cursor"
    LINK = "link"


@dataclass(frozen=True, slots=True)
class Pagination:
    type: PaginationType = PaginationType.NONE
    size_param: str | None = None
    size: int = 100
    page_param: str = "page"
    start: int = 1
    offset_param: str = "offset"
    cursor_param: str = "cursor"
    next_cursor: str = "next_cursor"


@dataclass(frozen=True, slots=True)
class PageRequest:
    """`url` None means the collection path; otherwise an absolute URL to follow."""

    url: str | None
    params: dict[str, Any]


def request_for(spec: Pagination, cursor: str | None) -> PageRequest:
    params: dict[str, Any] = {}
    if spec.type is not PaginationType.NONE and spec.size_param:
        params[spec.size_param] = spec.size
    match spec.type:
        case PaginationType.PAGE:
            params[spec.page_param] = int(cursor) if cursor else spec.start
        case PaginationType.OFFSET:
            params[spec.offset_param] = int(cursor) if cursor else 0
        case PaginationType.CURSOR if cursor:
            params[spec.cursor_param] = cursor
        case PaginationType.LINK if cursor:
            return PageRequest(url=cursor, params={})
    return PageRequest(url=None, params=params)


def next_cursor(spec: Pagination, *, cursor: str | None, response: httpx.Response, body: Any, count: int) -> str | None:
    """The cursor of the page after this one, or None when this page was the last."""
    match spec.type:
        case PaginationType.NONE:
            return None
        case PaginationType.PAGE:
            return None if count == 0 else str((int(cursor) if cursor else spec.start) + 1)
        case PaginationType.OFFSET:
            return None if count == 0 else str((int(cursor) if cursor else 0) + count)
        case PaginationType.CURSOR:
            token = _cursor_token(spec.next_cursor, response=response, body=body)
            if token is not None and token == cursor:
                raise PermanentError(f"pagination cursor did not advance ({spec.next_cursor})")
            return token
        case PaginationType.LINK:
            link = response.links.get("next")
            url = link.get("url") if link else None
            if not url:
                return None
            absolute = str(response.request.url.join(url))
            if absolute == cursor:
                raise PermanentError("pagination Link rel=next points at the same page")
            return absolute
    raise AssertionError(spec.type)  # pragma: no cover


def _cursor_token(where: str, *, response: httpx.Response, body: Any) -> str | None:
    if where.startswith("header:"):
        value = response.headers.get(where.removeprefix("header:"))
    else:
        value = dig(body, where)
    if value is None or value == "" or value is False:
        return None
    return str(value)


def dig(body: Any, path: str) -> Any:
    """The value at a dotted path ("" is the body itself); None where it is missing."""
    value = body
    for part in path.split(".") if path else ():
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
