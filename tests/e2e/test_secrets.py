"""No form of a credential an API echoes back reaches anything tandem shows or stores."""

import base64
import json
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.test_sync import ext_records
from tests.support.daemon import AppDb, Daemon, bindings_toml, eventually
from tests.support.servers import inject

pytestmark = pytest.mark.anyio

PASSWORD = 'pa/ss"w+rd é'
BASIC = base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
SHORT = "Zq9"
FORMS = [BASIC, f"robot:{PASSWORD}", PASSWORD, quote(PASSWORD), quote(PASSWORD, safe=""), json.dumps(PASSWORD)[1:-1],
         json.dumps(PASSWORD, ensure_ascii=False)[1:-1], SHORT]  # fmt: skip


def _echo() -> str:
    said = f"you sent Authorization: Basic {BASIC} (robot:{PASSWORD}, {quote(PASSWORD)}) and X-Api-Key {SHORT}"
    return json.dumps({"error": said})


async def test_no_form_of_an_echoed_credential_is_shown_or_stored(tmp_path, external: str, app_db: AppDb):
    config = bindings_toml(external).replace(
        'headers = { Authorization = "Bearer ${TASKS_TOKEN}" }',
        'headers = { Authorization = "Basic ${TASKS_BASIC}", X-Api-Key = "${TASKS_KEY}" }',
    )
    (tmp_path / "tandem.toml").write_text(config)
    daemon = Daemon(tmp_path, env={"TASKS_BASIC": BASIC, "TASKS_KEY": SHORT})
    try:
        await inject(external, status=422, body=_echo(), count=1, methods=["POST"])
        app_db.execute("INSERT INTO tasks (title) VALUES ('refused')")
        app_db.execute("INSERT INTO tasks (title) VALUES ('x')")
        await daemon.start()

        async def one_synced_one_parked() -> bool:
            return len(await ext_records(external)) == 1 and "you sent Authorization" in daemon.command("status").stdout

        await eventually(one_synced_one_parked, what="the refused record parked with its reason")
        async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.api_headers) as client:
            outputs = [(await client.get("/api/bindings")).text]
            outputs.append((await client.get("/api/bindings/tasks/links", params={"app_id": "1"})).text)
        assert daemon.stop() == 0
        await inject(external, status=400, body=_echo(), count=1, methods=["GET"])
        check = daemon.command("check")
        assert check.returncode == 1 and "you sent Authorization" in check.stderr
        outputs += [check.stdout, check.stderr, daemon.log_text()]
        for args in (("status",), ("status", "--json"), ("plan",)):
            result = daemon.command(*args)
            outputs += [result.stdout, result.stderr]
        stored = b"".join(path.read_bytes() for path in tmp_path.glob("state.db*"))
        for form in FORMS:
            assert all(form not in text for text in outputs), form
            assert form.encode() not in stored, form
    finally:
        daemon.kill()
