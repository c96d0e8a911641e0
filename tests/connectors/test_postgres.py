"""The postgres connector against the PostgreSQL server on this machine (database `test`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from connectors.base import ConfigurationError, PermanentError
from connectors.postgres import PostgresConnection, PostgresTable, PostgresTableSpec
from connectors.postgres_changelog import qualified
from tests.support.daemon import eventually
from tests.support.postgres import DSN, scratch_schema

pytestmark = pytest.mark.anyio

COLUMNS = ("name", "email", "active", "score", "meta", "seen")


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A schema of its own, with an awkward name, dropped afterwards."""
    columns = (
        "id serial PRIMARY KEY, name text NOT NULL, email text, active boolean NOT NULL DEFAULT true,"
        " score numeric(8, 2), meta jsonb, seen timestamptz"
    )
    async with scratch_schema(f'tandem test "{uuid.uuid4().hex[:8]}"', "contacts", columns) as name:
        yield name


@pytest.fixture
async def contacts(schema: str) -> AsyncIterator[PostgresTable]:
    connection = PostgresConnection("app", DSN)
    await connection.open()
    try:
        table = connection.collection(PostgresTableSpec(table="contacts", schema=schema, columns=COLUMNS))
        await table.check()
        yield table
    finally:
        await connection.aclose()


async def _app_write(schema: str, sql: str, *params: object) -> None:
    """A write by the app itself, on its own connection."""
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(sql.replace("{t}", qualified(schema, "contacts")), *params)
    finally:
        await connection.close()


async def test_crud_with_typed_columns_and_keyset_listing(contacts: PostgresTable):
    made = await contacts.create(
        {"name": "Ada", "email": "ada@example.com", "active": False, "score": 12.5, "meta": {"tier": "gold"}}
    )
    assert made.fields["active"] is False
    assert made.fields["score"] == 12.5
    assert made.fields["meta"] == {"tier": "gold"}
    updated = await contacts.update(made.id, {"seen": "2026-01-02T03:04:05+00:00"}, current=made)
    assert updated is not None and str(updated.fields["seen"]).startswith("2026-01-02T03:04:05")
    assert (await contacts.find({"email": "ada@example.com"}))[0].id == made.id
    await contacts.delete(made.id)
    await contacts.delete(made.id)  # a missing record is already deleted
    assert await contacts.get(made.id) is None

    for i in range(3):
        await contacts.create({"name": f"n{i}"})
    await _app_write(contacts.spec.schema, "INSERT INTO {t} (name) SELECT 'bulk ' || g FROM generate_series(1, 2497) g")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await contacts.list_page(cursor)
        seen.extend(record.id for record in page.records)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert len(seen) == len(set(seen)) == 2500  # three pages, by keyset


async def test_a_value_of_the_wrong_type_is_refused_with_the_servers_reason(contacts: PostgresTable):
    with pytest.raises(PermanentError, match="invalid input syntax for type numeric"):
        await contacts.create({"name": "Bad", "score": "lots"})
    with pytest.raises(PermanentError, match="null value in column"):
        await contacts.create({"email": "no-name@example.com"})


async def test_a_missing_table_or_column_is_a_configuration_error(contacts: PostgresTable, schema: str):
    connection = PostgresConnection("app", DSN)
    await connection.open()
    try:
        with pytest.raises(ConfigurationError, match="does not exist"):
            await connection.collection(PostgresTableSpec(table="nope", schema=schema)).check()
        with pytest.raises(ConfigurationError, match="has no column 'phone'"):
            await connection.collection(PostgresTableSpec(table="contacts", schema=schema, columns=("phone",))).check()
    finally:
        await connection.aclose()


async def test_the_change_log_skips_nothing_committed_late(contacts: PostgresTable):
    await contacts.install_changelog()
    assert await contacts.changelog_installed()
    assert (await contacts.changes(None)).ids == []
    schema = contacts.spec.schema
    slow = await asyncpg.connect(DSN)
    try:
        slow_tx = slow.transaction()
        await slow_tx.start()
        await slow.execute(f"INSERT INTO {qualified(schema, 'contacts')} (name) VALUES ('slow')")  # an early seq
        await _app_write(schema, "INSERT INTO {t} (name) VALUES ('quick')")  # commits first
        held = await contacts.changes(None)
        assert held.ids == []  # the quick one waits behind the running transaction
        await slow_tx.commit()
    finally:
        await slow.close()
    batch = await contacts.changes(None)
    names = {(await contacts.get(record_id)).fields["name"] for record_id in batch.ids}  # type: ignore[union-attr]
    assert names == {"slow", "quick"}
    idle = await contacts.changes(batch.cursor)
    assert idle.ids == [] and idle.cursor == batch.cursor

    await _app_write(schema, "UPDATE {t} SET id = id + 1000 WHERE name = 'quick'")  # a key change
    moved = await contacts.changes(batch.cursor)
    assert len(moved.ids) == 2  # the old id (gone) and the new one


async def test_listen_wakes_the_reader_when_a_write_commits(contacts: PostgresTable):
    await contacts.install_changelog()
    woken = anyio.Event()
    calls = 0

    def wake() -> None:
        nonlocal calls
        calls += 1
        if calls > 1:  # the first call is the catch-up at connect
            woken.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(contacts.watch, wake)
        await eventually(lambda: _true(calls >= 1), what="the listener to connect")
        await _app_write(contacts.spec.schema, "INSERT INTO {t} (name) VALUES ('wake up')")
        with anyio.fail_after(5):
            await woken.wait()
        tg.cancel_scope.cancel()


async def test_remove_changelog_drops_what_install_made(contacts: PostgresTable):
    await contacts.install_changelog()
    await contacts.install_changelog()  # twice is harmless
    await contacts.remove_changelog()
    assert not await contacts.changelog_installed()
    connection = await asyncpg.connect(DSN)
    try:
        left = await connection.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relname LIKE 'tandem%'",
            contacts.spec.schema,
        )
        functions = await connection.fetchval(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
            contacts.spec.schema,
        )
    finally:
        await connection.close()
    assert (left, functions) == (0, 0)
    await _app_write(contacts.spec.schema, "INSERT INTO {t} (name) VALUES ('after removal')")  # the app still works
    assert len(await contacts.find({"name": "after removal"})) == 1


async def _true(value: bool) -> bool:
    return value


async def test_a_value_too_long_for_its_column_is_refused_not_cut(schema: str):
    await _app_write(schema, "ALTER TABLE {t} ADD COLUMN code varchar(40)")
    connection = PostgresConnection("app", DSN)
    await connection.open()
    try:
        table = connection.collection(PostgresTableSpec(table="contacts", schema=schema, columns=("name", "code")))
        await table.check()
        with pytest.raises(PermanentError, match="too long"):
            await table.create({"name": "long", "code": "x" * 50})
        made = await table.create({"name": "short", "code": "y" * 40})
        with pytest.raises(PermanentError, match="too long"):
            await table.update(made.id, {"code": "z" * 41}, current=made)
        kept = await table.get(made.id)
        assert kept is not None and kept.fields["code"] == "y" * 40
    finally:
        await connection.aclose()


async def test_a_mapped_column_renamed_under_a_running_daemon_is_a_configuration_error(contacts, schema: str):
    await contacts.create({"name": "Ada"})
    await _app_write(schema, "ALTER TABLE {t} RENAME COLUMN email TO mail")
    with pytest.raises(ConfigurationError, match="mapped column 'email' is no longer in the table"):
        await contacts.list_page(None)


async def test_the_table_says_which_columns_refuse_a_null_unless_a_trigger_may_fill_them(contacts, schema: str):
    table = contacts.capabilities
    assert table.not_null == {"name", "active"}  # the serial id is tandem's own
    assert table.defaulted == {"id", "active"}
    fill = qualified(schema, "fill_name")
    await _app_write(
        schema,
        f"CREATE FUNCTION {fill}() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN NEW.name := coalesce(NEW.name, 'filled'); RETURN NEW; END $$",
    )
    await _app_write(schema, f"CREATE TRIGGER fill BEFORE INSERT ON {{t}} FOR EACH ROW EXECUTE FUNCTION {fill}()")
    await contacts.check()
    assert contacts.capabilities.not_null == frozenset()  # only the server can say now
    made = await contacts.create({"name": None})
    assert made.fields["name"] == "filled"
