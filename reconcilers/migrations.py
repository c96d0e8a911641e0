"""Versioned schema of the state database, applied in order, each in one transaction.

A database from a newer tandem is refused rather than guessed at: downgrading the
binary must never silently corrupt links.
"""

from __future__ import annotations

import aiosqlite


class StateError(Exception):
    """The state database cannot be used: locked, read-only, corrupt or too new."""


_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE links (
            row INTEGER PRIMARY KEY,
            binding TEXT NOT NULL,
            app_id TEXT,
            external_id TEXT,
            state TEXT NOT NULL,
            base TEXT,
            error TEXT,
            failed_fingerprint TEXT,
            intent_side TEXT,
            intent_values TEXT,
            synced_at REAL,
            updated_at REAL NOT NULL
        )""",
        "CREATE UNIQUE INDEX links_app ON links (binding, app_id) WHERE app_id IS NOT NULL",
        "CREATE UNIQUE INDEX links_external ON links (binding, external_id) WHERE external_id IS NOT NULL",
        "CREATE INDEX links_state ON links (binding, state)",
        """CREATE TABLE conflicts (
            row INTEGER PRIMARY KEY,
            binding TEXT NOT NULL,
            app_id TEXT,
            external_id TEXT,
            field TEXT NOT NULL,
            app_value TEXT,
            external_value TEXT,
            base_value TEXT,
            winner TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX conflicts_binding ON conflicts (binding)",
        """CREATE TABLE cursors (
            binding TEXT NOT NULL,
            source TEXT NOT NULL,
            value TEXT,
            PRIMARY KEY (binding, source)
        )""",
        """CREATE TABLE bindings (
            binding TEXT PRIMARY KEY,
            deletes_blocked INTEGER NOT NULL DEFAULT 0,
            blocked_at REAL,
            last_resync_at REAL,
            last_resync_result TEXT
        )""",
    ),
    (
        # 2: the outbox of change notifications to the app, delivered at least once.
        """CREATE TABLE outbox (
            row INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            binding TEXT NOT NULL,
            body TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL,
            last_error TEXT
        )""",
        "CREATE INDEX outbox_due ON outbox (binding, next_at)",
    ),
    (
        # 3: the id tandem chose for a pending create, where the other side takes one.
        "ALTER TABLE links ADD COLUMN intent_id TEXT",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)


async def current_version(db: aiosqlite.Connection) -> int:
    async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'") as cursor:
        if await cursor.fetchone() is None:
            return 0
    async with db.execute("SELECT MAX(version) FROM schema_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def migrate(db: aiosqlite.Connection, *, target: str, read_only: bool) -> None:
    version = await current_version(db)
    if version > SCHEMA_VERSION:
        raise StateError(
            f"state database {target} has schema version {version}, newer than this"
            f" tandem supports ({SCHEMA_VERSION}): upgrade tandem or restore a backup"
        )
    if version == SCHEMA_VERSION:
        return
    if read_only:
        raise StateError(
            f"state database {target} has schema version {version}, expected {SCHEMA_VERSION}:"
            " run `tandem run` once to migrate it"
        )
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                await db.execute(statement)
            await db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
