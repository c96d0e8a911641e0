"""Secrets in every form they are sent, so that none comes back in text tandem shows.

APIs echo what they were sent ("you sent Authorization: Bearer ..."), in an error body that
tandem quotes to say why a record was refused. A credential goes out raw, base64-encoded
inside Basic auth, and may come back JSON-escaped or URL-encoded: each form is masked,
however short the secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

MASK = "***"

_CREDENTIAL_HEADER = re.compile(r"auth|token|key|secret|cookie|session|password|signature", re.IGNORECASE)


def secret_forms(secret: str) -> set[str]:
    """`secret` as it may appear in text: raw, JSON-escaped, URL-encoded."""
    if not secret:
        return set()
    escaped = json.dumps(secret)[1:-1]
    ascii_escaped = json.dumps(secret, ensure_ascii=True)[1:-1]
    encoded = {quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe="/")}
    return {secret, escaped, ascii_escaped, *encoded}


def basic_header(user: str, password: str) -> str:
    """The Authorization header value HTTP Basic credentials are sent as."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def credential_parts(value: str) -> set[str]:
    """What a credential header value holds: the value, its credential after the scheme
    (`Bearer T` → `T`), and for Basic the decoded `user:password` and the password."""
    parts = {value.strip()}
    scheme, _, credential = value.strip().partition(" ")
    if credential:
        parts.add(credential.strip())
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credential.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            if decoded:
                parts.add(decoded)
                parts.add(decoded.partition(":")[2])
    return {part for part in parts if part}


def header_secrets(headers: Mapping[str, str]) -> set[str]:
    """The secrets the credential-bearing headers of a connection send."""
    found: set[str] = set()
    for name, value in headers.items():
        if _CREDENTIAL_HEADER.search(name):
            found |= credential_parts(value)
    return found


class Masker:
    """Replaces every form of the given secrets with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets for form in secret_forms(secret)}
        # Longest first, so a secret containing another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def mask(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text
