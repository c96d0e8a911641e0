"""Credentials are masked in every form a server may echo them."""

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from connectors.base import PermanentError
from connectors.http import HttpSettings
from connectors.rest import RestCollectionSpec, RestConnection
from connectors.secrets import Masker, credential_parts, header_secrets
from tests.support.servers import inject, sample_app

pytestmark = pytest.mark.anyio

PASSWORD = 'pa/ss"w+rd é'
BASIC = "Basic " + base64.b64encode(f"robot:{PASSWORD}".encode()).decode()


def _echoes(secret: str) -> list[str]:
    return [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=True)[1:-1], quote(secret, safe=""),
            quote_plus(secret)]  # fmt: skip


@pytest.mark.parametrize("form", _echoes(PASSWORD))
def test_every_form_of_a_secret_is_masked(form):
    masker = Masker([PASSWORD])
    assert masker.mask(f"you sent {form}!") == "you sent ***!"


def test_basic_auth_is_masked_encoded_decoded_and_as_the_password_alone():
    parts = credential_parts(BASIC)
    masker = Masker(parts)
    encoded = BASIC.partition(" ")[2]
    for echoed in (BASIC, encoded, f"robot:{PASSWORD}", PASSWORD):
        assert "***" in masker.mask(echoed) and echoed not in masker.mask(echoed)


def test_only_credential_headers_are_secrets_and_short_ones_count():
    found = header_secrets({"Accept": "application/json", "X-Api-Key": "Zq9", "Authorization": "Bearer tok"})
    assert found == {"Zq9", "Bearer tok", "tok"}
    assert Masker(found).mask("key Zq9 and tok") == "key *** and ***"


async def test_an_error_body_echoing_the_credentials_is_masked_at_the_connector():
    echo = json.dumps({"error": f"bad: you sent {BASIC} ({PASSWORD}; {quote(PASSWORD)})"})
    async with sample_app() as url:
        await inject(url, status=400, body=echo, count=1, methods=["POST"])
        connection = RestConnection("tasks", HttpSettings(base_url=url, headers={"Authorization": BASIC}))
        await connection.open()
        try:
            with pytest.raises(PermanentError) as caught:
                await connection.collection(RestCollectionSpec(path="/tasks")).create({"title": "t"})
        finally:
            await connection.aclose()
    message = str(caught.value)
    assert "bad: you sent" in message
    for secret in (BASIC, BASIC.partition(" ")[2], PASSWORD, quote(PASSWORD), json.dumps(PASSWORD)[1:-1]):
        assert secret not in message
