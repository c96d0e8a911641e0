"""The admin API answers only its operator: a token, the daemon's own Host, no cross-site."""

import os
import stat

import httpx
import pytest

from tests.support.daemon import Daemon

pytestmark = pytest.mark.anyio

ADMIN_CALLS = [
    ("GET", "/api/bindings", {}, None),
    ("GET", "/api/bindings/tasks/links", {"app_id": "1"}, None),
    ("PUT", "/api/bindings/tasks/links", {}, {"app_id": "1", "external_id": "2"}),
    ("DELETE", "/api/bindings/tasks/links", {"app_id": "1"}, None),
    ("POST", "/api/bindings/tasks/resync", {"allow_deletes": "true"}, None),
]


async def test_every_admin_endpoint_needs_the_token(daemon: Daemon, app_db):
    app_db.execute("INSERT INTO tasks (title) VALUES ('kept')")
    await daemon.start()
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        for method, path, params, body in ADMIN_CALLS:
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic eA=="}):
                answer = await client.request(method, path, params=params, json=body, headers=headers)
                assert answer.status_code == 401, (method, path, headers)
                assert daemon.env["TANDEM_API_TOKEN"] not in answer.text
        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(open_path)).status_code == 200
        listing = await client.get("/api/bindings", headers=daemon.api_headers)
        assert listing.status_code == 200
    # Nothing the refused calls asked for happened: no link was made or dropped.
    assert '"synced": 1' in daemon.command("status", "--json").stdout
    assert daemon.env["TANDEM_API_TOKEN"] not in daemon.log_text()
    assert daemon.stop() == 0


async def test_a_foreign_host_or_a_cross_site_request_is_refused(daemon: Daemon):
    await daemon.start()
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.api_headers) as client:
        rebound = {"Host": f"evil.example:{daemon.port}"}
        for path in ("/healthz", "/metrics", "/api/bindings"):
            assert (await client.get(path, headers=rebound)).status_code == 421
        assert (await client.get("/api/bindings", headers={"Host": f"localhost:{daemon.port}"})).status_code == 200
        resync = "/api/bindings/tasks/resync"
        assert (await client.post(resync, headers={"Origin": "http://evil.example"})).status_code == 403
        assert (await client.post(resync, headers={"Sec-Fetch-Site": "cross-site"})).status_code == 403
        same_origin = {"Origin": daemon.url}
        assert (await client.post(resync, headers=same_origin)).status_code == 202
    assert daemon.stop() == 0


async def test_without_a_configured_token_one_is_made_for_the_local_operator(daemon: Daemon, tmp_path):
    del daemon.env["TANDEM_API_TOKEN"]
    await daemon.start()
    token_path = tmp_path / "state.db.api-token"
    assert stat.S_IMODE(os.stat(token_path).st_mode) == 0o600
    token = token_path.read_text().strip()
    assert len(token) >= 32
    async with httpx.AsyncClient(base_url=daemon.url) as client:
        assert (await client.get("/api/bindings")).status_code == 401
        authorised = await client.get("/api/bindings", headers={"Authorization": f"Bearer {token}"})
        assert authorised.status_code == 200
    result = daemon.command("resync", "--binding", "tasks")  # finds the token file
    assert result.returncode == 0, result.stderr
    daemon.env["TANDEM_API_TOKEN"] = "another-token-0123456789"
    refused = daemon.command("resync", "--binding", "tasks")
    assert refused.returncode == 1
    assert "refused the admin API token" in refused.stderr
    assert token not in daemon.log_text()
    assert daemon.stop() == 0


def test_a_non_loopback_address_without_a_token_is_refused_before_binding(daemon: Daemon):
    del daemon.env["TANDEM_API_TOKEN"]
    daemon.env["TANDEM_HTTP_ADDR"] = f"0.0.0.0:{daemon.port}"
    result = daemon.command("run")
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr
    assert "TANDEM_API_TOKEN" in result.stderr


def test_a_token_too_short_to_be_safe_is_a_configuration_error(daemon: Daemon):
    daemon.env["TANDEM_API_TOKEN"] = "short"
    result = daemon.command("resync")
    assert result.returncode == 2
    assert "at least 16 characters" in result.stderr
