"""The bindings file: TOML, `${NAME}` secrets from the environment, strict validation.

Every error names the file, the key and what is wrong, and never echoes a value
(a value may be a secret). Unknown keys are errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from connectors.pagination import PaginationType
from connectors.rest import Lookup
from connectors.secrets import basic_header
from daemon.configfile import ConfigError, literal_credentials, read_toml
from daemon.envrefs import UnfilledReference, substitute
from daemon.settings import parse_duration
from reconcilers.canonical import FieldType
from reconcilers.model import ConflictPolicy, Direction, Flow, Side

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqliteConnectionConfig(_Strict):
    type: Literal["sqlite"]
    path: str
    busy_timeout: Duration = 5.0


class PostgresConnectionConfig(_Strict):
    type: Literal["postgres"]
    dsn: Annotated[str, Field(pattern=r"^postgres(ql)?://")]
    pool_size: Annotated[int, Field(ge=1, le=100)] = 4
    timeout: Duration = 10.0


class _HttpConnectionConfig(_Strict):
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    headers: dict[str, str] = {}
    rate_limit: Annotated[float, Field(gt=0)] | None = None
    timeout: Duration = 10.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3


class RestConnectionConfig(_HttpConnectionConfig):
    type: Literal["rest"]


class BasicAuthConfig(_Strict):
    user: str
    password: str

    def header(self) -> str:
        """The Authorization header value these credentials are sent as."""
        return basic_header(self.user, self.password)


class KintoConnectionConfig(_HttpConnectionConfig):
    type: Literal["kinto"]
    auth: BasicAuthConfig | None = None
    page_size: Annotated[int, Field(ge=1, le=10_000)] = 200


class CouchConnectionConfig(_HttpConnectionConfig):
    type: Literal["couchdb"]
    auth: BasicAuthConfig | None = None
    page_size: Annotated[int, Field(ge=1, le=10_000)] = 200


HttpConnectionConfig = RestConnectionConfig | KintoConnectionConfig | CouchConnectionConfig
ConnectionConfig = Annotated[
    SqliteConnectionConfig | PostgresConnectionConfig | HttpConnectionConfig, Field(discriminator="type")
]
APP_TYPES = ("sqlite", "postgres")
EXTERNAL_TYPES = ("rest", "kinto", "couchdb")

_REST_KEYS = (
    "path",
    "id",
    "records",
    "record",
    "pagination",
    "update_method",
    "changed_since",
    "lookup",
    "bulk_create",
)
_ID_FIELDS = {"kinto": "id", "couchdb": "_id"}
"""The id field of external connection types whose id is not configurable (rest: `id`)."""
_EXTERNAL_KEYS = {"rest": ("path",), "kinto": ("bucket", "collection"), "couchdb": ("database",)}
"""Per external connection type: the keys it requires; every other type's keys are refused."""


class WebhookConfig(_Strict):
    secret: str | None = None
    signature_header: str = "X-Tandem-Signature"
    ids: str = "id"
    timestamp_header: str | None = None
    tolerance: Duration = 300.0
    max_body: Annotated[int, Field(ge=1)] = 1_048_576
    max_ids: Annotated[int, Field(ge=1, le=100_000)] = 100


class NotifyConfig(_Strict):
    url: Annotated[str, Field(pattern=r"^https?://")]
    secret: str | None = None
    signature_header: str = "X-Tandem-Signature"
    timeout: Duration = 10.0


def _sql_name(value: str) -> str:
    if not value:
        raise ValueError("an SQL name cannot be empty")
    if "\x00" in value:
        raise ValueError("an SQL name cannot contain a NUL character")
    return value


SqlName = Annotated[str, AfterValidator(_sql_name)]


class AppSideConfig(_Strict):
    connection: str
    table: SqlName
    schema_: Annotated[SqlName | None, Field(alias="schema")] = None  # postgres only; default "public"
    id: SqlName = "id"
    webhook: WebhookConfig | None = None
    notify: NotifyConfig | None = None


class PaginationConfig(_Strict):
    type: PaginationType
    size_param: str | None = None
    size: Annotated[int, Field(ge=1, le=100_000)] = 100
    page_param: str = "page"
    start: int = 1
    offset_param: str = "offset"
    cursor_param: str = "cursor"
    next_cursor: str = "next_cursor"


class ChangedSinceConfig(_Strict):
    param: str
    field: str


class BulkCreateConfig(_Strict):
    path: str
    size: Annotated[int, Field(ge=1, le=10_000)] = 100
    body: str = ""
    records: str = ""


class ExternalSideConfig(_Strict):
    connection: str
    path: str = ""  # rest
    bucket: str = ""  # kinto
    collection: str = ""  # kinto
    database: str = ""  # couchdb
    id: str = "id"
    records: str = ""
    record: str = ""
    pagination: PaginationConfig | None = None
    update_method: Literal["PATCH", "PUT"] = "PATCH"
    changed_since: ChangedSinceConfig | None = None
    lookup: Lookup = Lookup.QUERY
    bulk_create: BulkCreateConfig | None = None
    webhook: WebhookConfig | None = None


class FieldConfig(_Strict):
    external: str
    type: FieldType | None = None
    direction: Direction = Direction.BOTH


class DeleteGuardConfig(_Strict):
    max_fraction: Annotated[float, Field(ge=0, le=1)] = 0.25
    min_count: Annotated[int, Field(ge=0)] = 3
    window: Duration = 600.0


class BindingConfig(_Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    match: list[str] = []
    conflict: ConflictPolicy = ConflictPolicy.APP_WINS
    creates: Flow = Flow.BOTH
    deletes: Flow = Flow.BOTH
    delete_guard: DeleteGuardConfig = DeleteGuardConfig()
    poll_interval: Duration | None = None
    resync_interval: Duration | None = None
    app: AppSideConfig
    external: ExternalSideConfig
    fields: Annotated[dict[str, str | FieldConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _match_fields_are_mapped(self) -> BindingConfig:
        unknown = [name for name in self.match if name not in self.fields]
        if unknown:
            raise ValueError(f"match names {', '.join(unknown)}, which is not in [fields]")
        if self.app.id in self.fields:
            raise ValueError(f"the app id column {self.app.id!r} cannot be a mapped field")
        for column in self.fields:
            _sql_name(column)
        return self

    def check_id_not_written(self, id_field: str) -> None:
        for column, spec in self.field_configs().items():
            if spec.external == id_field and spec.direction.allows(Side.EXTERNAL):
                raise ValueError(
                    f"binding {self.name!r}: fields.{column} maps the external id field {id_field!r}, which"
                    ' tandem never writes: give it direction = "to-app" to copy the id into the app, or map'
                    " another field"
                )

    def field_configs(self) -> dict[str, FieldConfig]:
        return {
            name: spec if isinstance(spec, FieldConfig) else FieldConfig(external=spec)
            for name, spec in self.fields.items()
        }


class BindingsFile(_Strict):
    connections: Annotated[dict[str, ConnectionConfig], Field(min_length=1)]
    bindings: Annotated[list[BindingConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _references(self) -> BindingsFile:
        seen: set[str] = set()
        for binding in self.bindings:
            if binding.name in seen:
                raise ValueError(f"binding name {binding.name!r} is used twice")
            seen.add(binding.name)
            _check_connection(self, binding.name, "app", binding.app.connection, APP_TYPES)
            _check_connection(self, binding.name, "external", binding.external.connection, EXTERNAL_TYPES)
            _check_external_keys(self, binding)
            binding.check_id_not_written(
                _ID_FIELDS.get(self.connections[binding.external.connection].type, binding.external.id)
            )
            if binding.app.schema_ is not None and self.connections[binding.app.connection].type != "postgres":
                raise ValueError(f"binding {binding.name!r}: app.schema applies to postgres tables only")
        return self

    def binding(self, name: str) -> BindingConfig:
        for binding in self.bindings:
            if binding.name == name:
                return binding
        raise ConfigError(f"no binding named {name!r}")


def _check_connection(config: BindingsFile, binding: str, side: str, name: str, types: tuple[str, ...]) -> None:
    connection = config.connections.get(name)
    if connection is None:
        raise ValueError(f"binding {binding!r}: {side}.connection {name!r} is not in [connections]")
    if connection.type not in types:
        raise ValueError(
            f"binding {binding!r}: {side}.connection {name!r} is of type {connection.type!r},"
            f" which cannot be the {side} side (use {' or '.join(types)})"
        )


def _check_external_keys(config: BindingsFile, binding: BindingConfig) -> None:
    kind = config.connections[binding.external.connection].type
    given = binding.external.model_fields_set
    missing = [key for key in _EXTERNAL_KEYS[kind] if not getattr(binding.external, key)]
    if missing:
        raise ValueError(f"binding {binding.name!r}: external.{missing[0]} is required for a {kind} connection")
    foreign = {key for other, keys in _EXTERNAL_KEYS.items() if other != kind for key in keys}
    if kind != "rest":
        foreign.update(_REST_KEYS)
    refused = sorted(given & foreign)
    if refused:
        raise ValueError(f"binding {binding.name!r}: external.{refused[0]} does not apply to a {kind} connection")


# --- loading --------------------------------------------------------------------------


def _location(loc: tuple[Any, ...], raw: Mapping[str, Any]) -> str:
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                name = node[item].get("name")
                label += f" ({name})" if isinstance(name, str) else ""
            parts.append(label)
        elif item in ("sqlite", "postgres", "rest", "kinto", "couchdb") and parts and parts[0] == "connections":
            continue  # the union member pydantic tried: not a key the user wrote
        else:
            parts.append(("." if parts else "") + str(item))
        node = node[item] if isinstance(node, dict | list) and _has(node, item) else None
    return "".join(parts) or "(top level)"


def _has(node: Any, item: Any) -> bool:
    if isinstance(node, dict):
        return item in node
    return isinstance(item, int) and item < len(node)


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> tuple[BindingsFile, set[str]]:
    """The validated bindings file, and the set of values taken from `${...}` (to redact)."""
    raw = read_toml(path)
    secrets: set[str] = set()
    try:
        data = substitute(raw, path="", environ=os.environ if environ is None else environ, secrets=secrets)
    except UnfilledReference as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        config = BindingsFile.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_location(tuple(error['loc']), raw)}: {_message(error)}" for error in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(problems[:5])) from None
    _resolve_paths(config, base=path.parent)
    try:
        _usable_paths(config)
        _one_binding_per_table(config)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config, secrets | literal_credentials(data)


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _resolve_paths(config: BindingsFile, *, base: Path) -> None:
    """SQLite paths in the file are relative to the file, not to the working directory."""
    for name, connection in list(config.connections.items()):
        if isinstance(connection, SqliteConnectionConfig) and not Path(connection.path).is_absolute():
            resolved = connection.model_copy(update={"path": str(base / connection.path)})
            config.connections[name] = resolved


def _usable_paths(config: BindingsFile) -> None:
    for name, connection in config.connections.items():
        if isinstance(connection, SqliteConnectionConfig) and Path(connection.path).is_dir():
            raise ValueError(f"connections.{name}.path: {connection.path} is a directory, not an SQLite database file")


def _one_binding_per_table(config: BindingsFile) -> None:
    """Two bindings writing one table would undo each other's work, however the table is named:
    through two connections to one SQLite file, or as `tasks` and `TASKS` (SQLite ignores case)."""
    owners: dict[tuple[str, ...], str] = {}
    for binding in config.bindings:
        table = _table_identity(config.connections[binding.app.connection], binding.app)
        other = owners.setdefault(table, binding.name)
        if other != binding.name:
            raise ValueError(
                f"binding {binding.name!r}: table {binding.app.table!r} of connection {binding.app.connection!r}"
                f" is already synced by another binding ({other!r})"
            )


def _table_identity(connection: ConnectionConfig, app: AppSideConfig) -> tuple[str, ...]:
    if isinstance(connection, SqliteConnectionConfig):
        return ("sqlite", os.path.realpath(connection.path), app.table.lower())
    assert isinstance(connection, PostgresConnectionConfig)
    dsn = urlsplit(connection.dsn)
    server = f"{(dsn.hostname or 'localhost').lower()}:{dsn.port or 5432}{dsn.path or '/'}"
    return ("postgres", server, app.schema_ or "public", app.table)  # quoted names: case counts
