"""The change log tandem installs in an app's SQLite database.

A table `tandem_changelog` and three triggers per synced table record the id of
every inserted, updated or deleted row, so app-side changes are found by reading
the log after a sequence number instead of scanning the table. `tandem changelog
remove` drops the triggers (and the table once no triggers use it).
"""

from __future__ import annotations

LOG_TABLE = "tandem_changelog"


def quote(identifier: str) -> str:
    """An SQL identifier, quoted so any table or column name is safe."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def trigger_names(table: str) -> tuple[str, str, str]:
    return (f"tandem_{table}_insert", f"tandem_{table}_update", f"tandem_{table}_delete")


def install_statements(table: str, id_column: str) -> list[str]:
    t, row_id, name = quote(table), quote(id_column), literal(table)
    insert, update, delete = (quote(n) for n in trigger_names(table))
    log = quote(LOG_TABLE)
    return [
        f"CREATE TABLE IF NOT EXISTS {log} (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " tbl TEXT NOT NULL, row_id TEXT, op TEXT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {quote(LOG_TABLE + '_tbl')} ON {log} (tbl, seq)",
        f"CREATE TRIGGER IF NOT EXISTS {insert} AFTER INSERT ON {t} BEGIN"
        f" INSERT INTO {log} (tbl, row_id, op) VALUES ({name}, NEW.{row_id}, 'insert'); END",
        f"CREATE TRIGGER IF NOT EXISTS {update} AFTER UPDATE ON {t} BEGIN"
        f" INSERT INTO {log} (tbl, row_id, op) VALUES ({name}, NEW.{row_id}, 'update');"
        f" INSERT INTO {log} (tbl, row_id, op) SELECT {name}, OLD.{row_id}, 'delete'"
        f" WHERE OLD.{row_id} IS NOT NEW.{row_id}; END",
        f"CREATE TRIGGER IF NOT EXISTS {delete} AFTER DELETE ON {t} BEGIN"
        f" INSERT INTO {log} (tbl, row_id, op) VALUES ({name}, OLD.{row_id}, 'delete'); END",
    ]


def remove_statements(table: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {quote(name)}" for name in trigger_names(table)] + [
        f"DELETE FROM {quote(LOG_TABLE)} WHERE tbl = {literal(table)}"
    ]
