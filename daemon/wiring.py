"""Start-up wiring: the only place that turns configuration into concrete connectors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from connectors.base import AppTable, Collection, Connection, RequestObserver, ignore_request
from connectors.couchdb import CouchConnection, CouchDatabaseSpec
from connectors.http import HttpSettings
from connectors.kinto import KintoCollectionSpec, KintoConnection
from connectors.pagination import Pagination, PaginationType
from connectors.rest import BulkCreate, ChangedSince, RestCollectionSpec, RestConnection
from connectors.sqlite import SqliteConnection, SqliteTableSpec
from daemon.config import (
    BindingConfig,
    BindingsFile,
    CouchConnectionConfig,
    HttpConnectionConfig,
    KintoConnectionConfig,
    PostgresConnectionConfig,
    SqliteConnectionConfig,
)
from reconcilers.binding import Binding
from reconcilers.canonical import FieldType
from reconcilers.model import DeleteGuard, FieldMap, Policy


def policy_of(config: BindingConfig) -> Policy:
    fields = tuple(
        FieldMap(
            name=name,
            external=spec.external,
            type=spec.type or FieldType.AUTO,
            direction=spec.direction,
        )
        for name, spec in config.field_configs().items()
    )
    return Policy(
        fields=fields,
        match=tuple(config.match),
        conflict=config.conflict,
        creates=config.creates,
        deletes=config.deletes,
        delete_guard=DeleteGuard(**config.delete_guard.model_dump()),
    )


def make_connection(
    name: str,
    config: SqliteConnectionConfig | PostgresConnectionConfig | HttpConnectionConfig,
    *,
    observer: RequestObserver = ignore_request,
    concurrency: int = 8,
) -> Connection:
    if isinstance(config, SqliteConnectionConfig):
        return SqliteConnection(name, config.path, busy_timeout=config.busy_timeout)
    if isinstance(config, PostgresConnectionConfig):
        from connectors.postgres import PostgresConnection  # asyncpg costs start-up time and memory: only when used

        return PostgresConnection(name, config.dsn, pool_size=config.pool_size, timeout=config.timeout)
    headers = dict(config.headers)
    if isinstance(config, KintoConnectionConfig | CouchConnectionConfig) and config.auth is not None:
        headers["Authorization"] = config.auth.header()
    settings = HttpSettings(
        base_url=config.base_url,
        headers=headers,
        timeout=config.timeout,
        retries=config.retries,
        rate_limit=config.rate_limit,
        backoff_header="Backoff" if isinstance(config, KintoConnectionConfig) else None,
        concurrency=concurrency,
    )
    if isinstance(config, KintoConnectionConfig):
        return KintoConnection(name, settings, page_size=config.page_size, observer=observer)
    if isinstance(config, CouchConnectionConfig):
        return CouchConnection(name, settings, page_size=config.page_size, observer=observer)
    return RestConnection(name, settings, observer=observer)


@dataclass(frozen=True, slots=True)
class Wired:
    connections: dict[str, Connection]
    bindings: list[Binding]
    app_tables: dict[str, AppTable]


def _app_table(connection: Connection, config: BindingConfig) -> AppTable:
    app, columns = config.app, tuple(config.field_configs())
    if isinstance(connection, SqliteConnection):
        return connection.collection(SqliteTableSpec(table=app.table, id=app.id, columns=columns))
    from connectors.postgres import PostgresConnection, PostgresTableSpec

    assert isinstance(connection, PostgresConnection)
    schema = app.schema_ or "public"
    return connection.collection(PostgresTableSpec(table=app.table, schema=schema, id=app.id, columns=columns))


def _external(connection: Connection, config: BindingConfig) -> Collection:
    ext = config.external
    if isinstance(connection, KintoConnection):
        return connection.collection(KintoCollectionSpec(ext.bucket, ext.collection))
    if isinstance(connection, CouchConnection):
        return connection.collection(CouchDatabaseSpec(ext.database))
    assert isinstance(connection, RestConnection)
    page = ext.pagination
    pagination = (
        Pagination(**page.model_dump())  # the configuration's keys are the spec's fields
        if page is not None
        else Pagination(type=PaginationType.NONE)
    )
    changed, bulk = ext.changed_since, ext.bulk_create
    spec = RestCollectionSpec(
        path=ext.path,
        id=ext.id,
        records=ext.records,
        record=ext.record,
        pagination=pagination,
        update_method=ext.update_method,
        changed_since=ChangedSince(changed.param, changed.field) if changed else None,
        lookup=ext.lookup,
        bulk_create=BulkCreate(bulk.path, bulk.size, bulk.body, bulk.records) if bulk else None,
    )
    return connection.collection(spec)


@asynccontextmanager
async def wire(
    config: BindingsFile,
    *,
    observer: RequestObserver = ignore_request,
    only: str | None = None,
    concurrency: int = 8,
) -> AsyncIterator[Wired]:
    """Open every connection the (selected) bindings use; close them all on exit."""
    selected = [b for b in config.bindings if only is None or b.name == only]
    used = {b.app.connection for b in selected} | {b.external.connection for b in selected}
    async with AsyncExitStack() as stack:
        connections: dict[str, Connection] = {}
        for name in sorted(used):
            connection = make_connection(name, config.connections[name], observer=observer, concurrency=concurrency)
            await connection.open()
            stack.push_async_callback(connection.aclose)
            connections[name] = connection
        bindings = []
        app_tables: dict[str, AppTable] = {}
        for binding in selected:
            table = _app_table(connections[binding.app.connection], binding)
            app_tables[binding.name] = table
            bindings.append(
                Binding(
                    name=binding.name,
                    policy=policy_of(binding),
                    app=table,
                    external=_external(connections[binding.external.connection], binding),
                )
            )
        yield Wired(connections, bindings, app_tables)
