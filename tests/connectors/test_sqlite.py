"""The SQLite connector against a real database file, with the app writing beside it."""

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from connectors.base import ConfigurationError, NotFoundError, PermanentError, RecordId
from connectors.sqlite import SqliteConnection, SqliteTableSpec

pytestmark = pytest.mark.anyio


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, done INTEGER, meta TEXT)")
        db.execute('CREATE TABLE "odd name" ("the id" TEXT PRIMARY KEY, title TEXT)')
    return path


async def _open(path: Path, table: str = "tasks", id_column: str = "id", columns=("title", "done")):
    connection = SqliteConnection("app", path)
    await connection.open()
    collection = connection.collection(SqliteTableSpec(table=table, id=id_column, columns=columns))
    await collection.check()
    return connection, collection


async def test_crud_with_integer_ids_and_encoded_values(app_db):
    connection, tasks = await _open(app_db)
    try:
        created = await tasks.create({"title": "one", "done": True, "meta": {"b": 1, "a": 2}})
        assert created.id == "1"
        assert created.fields["done"] == 1
        assert created.fields["meta"] == '{"a": 2, "b": 1}'
        updated = await tasks.update(created.id, {"done": False}, current=created)
        assert updated is not None and updated.fields["done"] == 0
        found = await tasks.find({"title": "one"})
        assert [r.id for r in found] == ["1"]
        await tasks.delete(created.id)
        await tasks.delete(created.id)
        assert await tasks.get(created.id) is None
        with pytest.raises(NotFoundError):
            await tasks.update(created.id, {"title": "x"}, current=None)
    finally:
        await connection.aclose()


VALUES: list[dict[str, Any]] = [
    {"title": "plain", "done": True, "meta": None},
    {"title": 'ünïcode ✓ "quoted" \\ back', "done": False, "meta": {"b": [1, 2.5], "a": None}},
    {"title": "nul \x00 inside", "done": 7, "meta": "text"},
    {"title": "float", "done": 0.1 + 0.2, "meta": 5e-324},
    {"title": "big", "done": 2**63 - 1, "meta": -(2**63)},
]


@pytest.mark.parametrize(
    "rows", [VALUES, [row for row in VALUES if "\x00" not in row["title"]]], ids=["one-nul", "json"]
)
async def test_a_batch_stores_every_value_as_one_create_at_a_time_does(app_db, rows):
    """A batch goes in as JSON where JSON carries every value as a parameter would (here,
    all but the NUL): what lands in the table is the same either way, type for type."""
    connection, tasks = await _open(app_db, columns=("title", "done", "meta"))
    try:
        singles = [await tasks.create(row) for row in rows]
        batch = await tasks.create_many(rows)
    finally:
        await connection.aclose()

    with sqlite3.connect(app_db) as db:
        stored = {
            row[0]: row[1:] for row in db.execute("SELECT id, title, typeof(done), done, typeof(meta), meta FROM tasks")
        }
    assert [stored[int(made)][0] for made in batch] == [row["title"] for row in rows]  # the ids in order
    for single, made in zip(singles, batch, strict=True):
        assert stored[int(made)] == stored[int(single.id)]


async def test_an_integer_beyond_64_bits_is_refused_as_that_record_alone(app_db):
    connection, tasks = await _open(app_db)
    try:
        with pytest.raises(PermanentError, match="64 bits"):
            await tasks.create({"title": "huge", "done": 2**64})
        with pytest.raises(PermanentError, match="64 bits"):  # the batch path tries one at a time
            await tasks.create_many([{"title": "fine", "done": 1}, {"title": "huge", "done": 2**64}])
    finally:
        await connection.aclose()
    with sqlite3.connect(app_db) as db:
        assert db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 0  # all or none


async def test_constraint_violation_is_permanent(app_db):
    connection, tasks = await _open(app_db)
    try:
        with pytest.raises(PermanentError, match="NOT NULL"):
            await tasks.create({"title": None})
    finally:
        await connection.aclose()


async def test_text_ids_and_odd_names_are_quoted(app_db):
    connection, odd = await _open(app_db, table="odd name", id_column="the id", columns=("title",))
    try:
        created = await odd.create({"title": "x"})
        assert len(created.id) == 32  # tandem chose the key
        assert (await odd.get(created.id)) is not None
    finally:
        await connection.aclose()


async def test_missing_table_or_column_names_what_is_wrong(app_db):
    connection = SqliteConnection("app", app_db)
    await connection.open()
    try:
        with pytest.raises(ConfigurationError, match="'nope' does not exist"):
            await connection.collection(SqliteTableSpec(table="nope")).check()
        with pytest.raises(ConfigurationError, match="no column 'colour'"):
            await connection.collection(SqliteTableSpec(table="tasks", columns=("colour",))).check()
    finally:
        await connection.aclose()


async def test_missing_database_file_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        await SqliteConnection("app", tmp_path / "absent.db").open()


async def test_keyset_listing_walks_every_row(app_db):
    with sqlite3.connect(app_db) as db:
        db.executemany("INSERT INTO tasks (title) VALUES (?)", [(f"t{i}",) for i in range(2500)])
    connection, tasks = await _open(app_db)
    try:
        seen, cursor = [], None
        while True:
            page = await tasks.list_page(cursor)
            seen.extend(page.records)
            if page.cursor is None:
                break
            cursor = page.cursor
        assert len({r.id for r in seen}) == 2500
    finally:
        await connection.aclose()


async def test_change_log_sees_app_writes_and_can_be_removed(app_db):
    connection, tasks = await _open(app_db)
    try:
        await tasks.install_changelog()
        assert await tasks.changelog_installed()
        with sqlite3.connect(app_db) as db:  # the app writes on its own connection
            db.execute("INSERT INTO tasks (id, title) VALUES (7, 'a')")
            db.execute("UPDATE tasks SET title = 'b' WHERE id = 7")
            db.execute("INSERT INTO tasks (id, title) VALUES (8, 'c')")
            db.execute("DELETE FROM tasks WHERE id = 8")
            db.execute("UPDATE tasks SET id = 9 WHERE id = 7")
        batch = await tasks.changes(None)
        assert batch.ids == [RecordId("7"), RecordId("8"), RecordId("9")]
        assert (await tasks.changes(batch.cursor)).ids == []
        with sqlite3.connect(app_db) as db:
            db.execute("INSERT INTO tasks (id, title) VALUES (10, 'd')")
        later = await tasks.changes(batch.cursor)
        assert later.ids == [RecordId("10")]
        with sqlite3.connect(app_db) as db:
            count = db.execute("SELECT COUNT(*) FROM tandem_changelog").fetchone()[0]
        assert count == 1  # the consumed entries were trimmed; the new one waits for its cursor
        await tasks.remove_changelog()
        assert not await tasks.changelog_installed()
        with sqlite3.connect(app_db) as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "tandem_changelog" not in names
    finally:
        await connection.aclose()


async def test_rows_without_an_id_are_said_and_do_not_cut_the_listing_short(tmp_path, monkeypatch):
    path = tmp_path / "loose.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT)")  # SQLite lets a TEXT key be NULL
        db.executemany("INSERT INTO tasks VALUES (NULL, ?)", [("nameless",)] * 3)
        db.executemany("INSERT INTO tasks VALUES (?, ?)", [(f"{i:04}", f"t{i}") for i in range(10)])
    monkeypatch.setattr("connectors.sqlite.PAGE_SIZE", 5)
    connection, tasks = await _open(path, columns=("title",))
    try:
        listed, cursor = [], None
        while True:
            page = await tasks.list_page(cursor)
            listed += [record.id for record in page.records]
            if page.cursor is None:
                break
            cursor = page.cursor
    finally:
        await connection.aclose()
    assert listed == [f"{i:04}" for i in range(10)]  # every row with an id, past the nameless ones


async def test_rows_sharing_an_id_make_a_record_with_a_problem_not_a_silent_pick(tmp_path):
    path = tmp_path / "nokey.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tasks (id INTEGER, title TEXT)")  # no primary key
        db.executemany("INSERT INTO tasks VALUES (?, ?)", [(1, "first"), (1, "second"), (2, "alone")])
    connection, tasks = await _open(path, columns=("title",))
    try:
        page = await tasks.list_page(None)
    finally:
        await connection.aclose()
    shared, alone = page.records
    assert shared.id == "1" and shared.problem is not None and "more than one row has id '1'" in shared.problem
    assert shared.fields == {}
    assert alone.problem is None and alone.fields["title"] == "alone"


async def test_a_mapped_column_dropped_under_a_running_daemon_is_a_configuration_error(app_db):
    connection, tasks = await _open(app_db, columns=("title", "done"))
    try:
        await tasks.create({"title": "one", "done": True})
        with sqlite3.connect(app_db) as db:
            db.execute("ALTER TABLE tasks DROP COLUMN done")
        with pytest.raises(ConfigurationError, match="mapped column 'done' is no longer in the table"):
            await tasks.list_page(None)
    finally:
        await connection.aclose()


async def test_a_create_into_a_renamed_column_is_a_configuration_error_not_the_records_fault(app_db):
    connection, tasks = await _open(app_db, columns=("title", "done"))
    try:
        with sqlite3.connect(app_db) as db:
            db.execute("ALTER TABLE tasks RENAME COLUMN done TO finished")
        with pytest.raises(ConfigurationError, match="has no column named done"):
            await tasks.create({"title": "one", "done": True})
    finally:
        await connection.aclose()
