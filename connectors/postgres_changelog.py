"""The change log tandem installs in an app's PostgreSQL database.

A table `tandem_changelog` in the synced table's schema, one trigger function, and one
row-level trigger per synced table record the id of every inserted, updated or deleted
row, with the id of the writing transaction, and `pg_notify` wakes the reader when the
transaction commits. The reader orders entries by (transaction id, sequence) and reads
only transactions older than every transaction still running
(`pg_snapshot_xmin(pg_current_snapshot())`): a transaction that took its sequence numbers
early but commits late can then never be skipped. `tandem changelog remove` drops the
trigger, and the table and function once no trigger uses them.
"""

from __future__ import annotations

LOG_TABLE = "tandem_changelog"
FUNCTION = "tandem_log_change"
CHANNEL = "tandem_changelog"


def quote(identifier: str) -> str:
    """An SQL identifier, quoted so any schema, table or column name is safe."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def qualified(schema: str, name: str) -> str:
    return f"{quote(schema)}.{quote(name)}"


def trigger_name(table: str) -> str:
    return f"tandem_{table}_changes"


def install_statements(schema: str, table: str, id_column: str) -> list[str]:
    log = qualified(schema, LOG_TABLE)
    function = qualified(schema, FUNCTION)
    return [
        f"CREATE TABLE IF NOT EXISTS {log} ("
        " seq bigserial PRIMARY KEY, xid xid8 NOT NULL DEFAULT pg_current_xact_id(),"
        " tbl text NOT NULL, row_id text, op text NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {quote(LOG_TABLE + '_order')} ON {log} (tbl, xid, seq)",
        # The id column's name is the trigger's argument: one function serves every table.
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$\n"
        "BEGIN\n"
        "  IF TG_OP IN ('UPDATE', 'DELETE') THEN\n"
        f"    IF TG_OP = 'DELETE' OR (to_jsonb(OLD) ->> TG_ARGV[0]) IS DISTINCT FROM"
        " (to_jsonb(NEW) ->> TG_ARGV[0]) THEN\n"
        f"      INSERT INTO {log} (tbl, row_id, op)"
        " VALUES (TG_TABLE_NAME, to_jsonb(OLD) ->> TG_ARGV[0], 'delete');\n"
        "    END IF;\n"
        "  END IF;\n"
        "  IF TG_OP IN ('INSERT', 'UPDATE') THEN\n"
        f"    INSERT INTO {log} (tbl, row_id, op)"
        " VALUES (TG_TABLE_NAME, to_jsonb(NEW) ->> TG_ARGV[0], lower(TG_OP));\n"
        "  END IF;\n"
        f"  PERFORM pg_notify({literal(CHANNEL)}, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);\n"
        "  RETURN NULL;\n"
        "END\n"
        "$body$",
        f"DROP TRIGGER IF EXISTS {quote(trigger_name(table))} ON {qualified(schema, table)}",
        f"CREATE TRIGGER {quote(trigger_name(table))} AFTER INSERT OR UPDATE OR DELETE"
        f" ON {qualified(schema, table)} FOR EACH ROW EXECUTE FUNCTION {function}({literal(id_column)})",
    ]


def remove_statements(schema: str, table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {quote(trigger_name(table))} ON {qualified(schema, table)}",
        f"DELETE FROM {qualified(schema, LOG_TABLE)} WHERE tbl = {literal(table)}",
    ]


def cleanup_statements(schema: str) -> list[str]:
    """Once no trigger uses them: the log table and the function."""
    return [
        f"DROP TABLE IF EXISTS {qualified(schema, LOG_TABLE)}",
        f"DROP FUNCTION IF EXISTS {qualified(schema, FUNCTION)}()",
    ]
