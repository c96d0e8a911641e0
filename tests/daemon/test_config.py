"""The bindings file: every error names the file, the key and what is wrong."""

from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.configfile import ConfigError, binding_names
from daemon.settings import SettingsError, load_settings, parse_duration

GOOD = """
[connections.app]
type = "sqlite"
path = "app.db"

[connections.tasks]
type = "rest"
base_url = "http://127.0.0.1:3000"
headers = { Authorization = "Bearer ${TASKS_TOKEN}" }

[[bindings]]
name = "tasks"
match = ["title"]
app = { connection = "app", table = "tasks" }

[bindings.external]
connection = "tasks"
path = "/tasks"
pagination = { type = "page", page_param = "_page", size_param = "_limit", size = 100 }

[bindings.fields]
title = "title"
done = { external = "completed", type = "bool" }
"""


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    path = tmp_path / "tandem.toml"
    path.write_text(text)
    return load_config(path, environ={"TASKS_TOKEN": "t0ken-value"} if environ is None else environ)


def test_a_good_file_loads_with_defaults_and_secrets(tmp_path):
    config, secrets = _load(tmp_path, GOOD)
    binding = config.bindings[0]
    assert binding.conflict.value == "app-wins"
    assert binding.creates.value == "both"
    assert binding.external.update_method == "PATCH"
    assert secrets == {"t0ken-value"}
    assert config.connections["tasks"].headers["Authorization"] == "Bearer t0ken-value"
    assert config.connections["app"].path == str(tmp_path / "app.db")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(('path = "/tasks"', 'path = "/tasks"\ncolour = "red"'),
                     r"bindings\[0\] \(tasks\)\.external\.colour: unknown key", id="unknown-key"),
        pytest.param(('type = "page"', 'type = "pages"'),
                     r"bindings\[0\] \(tasks\)\.external\.pagination\.type: Input should be", id="bad-enum"),
        pytest.param(('match = ["title"]', 'match = ["colour"]'),
                     r"match names colour, which is not in \[fields\]", id="match-not-mapped"),
        pytest.param(('connection = "tasks"', 'connection = "crm"'),
                     r"external.connection 'crm' is not in \[connections\]", id="unknown-connection"),
        pytest.param(('app = { connection = "app"', 'app = { connection = "tasks"'),
                     r"app.connection 'tasks' is of type 'rest', which cannot be", id="wrong-side"),
        pytest.param(('type = "bool"', 'type = "boolean"'),
                     r"fields\.done\.", id="bad-field-type"),
        pytest.param(('size = 100', 'size = "many"'),
                     r"pagination\.size: Input should be a valid integer", id="wrong-value-type"),
        pytest.param(('path = "/tasks"', 'path = "/tasks"\nbulk_create = { path = "/tasks/_bulk", size = 0 }'),
                     r"external\.bulk_create\.size: Input should be greater than or equal to 1", id="bulk-size"),
        pytest.param(('name = "tasks"\n', ''), r"bindings\[0\]\.name: required key is missing", id="missing"),
        pytest.param(('type = "sqlite"', 'type = "oracle"'), r"connections\.app: .*'sqlite', 'postgres', 'rest'",
                     id="unknown-connection-type"),
    ],
)  # fmt: skip
def test_errors_name_the_file_and_the_key(tmp_path, change, expected):
    old, new = change
    with pytest.raises(ConfigError, match=expected) as caught:
        _load(tmp_path, GOOD.replace(old, new, 1))
    assert str(caught.value).startswith(str(tmp_path / "tandem.toml"))


def test_missing_secret_names_the_variable_and_the_key(tmp_path):
    with pytest.raises(
        ConfigError, match=r"connections\.tasks\.headers\.Authorization: environment variable TASKS_TOKEN"
    ):
        _load(tmp_path, GOOD, environ={})


def test_invalid_toml_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        _load(tmp_path, GOOD + "\n[[bindings]\n")


def test_no_error_message_echoes_a_secret(tmp_path):
    text = GOOD.replace("size = 100", 'size = "${TASKS_TOKEN}"')
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert "t0ken-value" not in str(caught.value)


SECOND_BINDING = GOOD[GOOD.index("[[bindings]]") :].replace('name = "tasks"', 'name = "again"')


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(SECOND_BINDING, id="spelt-alike"),
        pytest.param(SECOND_BINDING.replace('table = "tasks"', 'table = "TASKS"'), id="sqlite-ignores-case"),
        pytest.param(
            SECOND_BINDING.replace('connection = "app"', 'connection = "same_file"')
            + '[connections.same_file]\ntype = "sqlite"\npath = "./sub/../app.db"\n',
            id="another-connection-to-the-file",
        ),
    ],
)
def test_two_bindings_on_one_table_are_refused(tmp_path, second):
    (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigError, match=r"already synced by another binding \('tasks'\)"):
        _load(tmp_path, GOOD + second)


def test_postgres_tables_differing_in_case_are_two_tables(tmp_path):
    text = GOOD.replace('type = "sqlite"\npath = "app.db"', 'type = "postgres"\ndsn = "postgresql://h/db"')
    second = SECOND_BINDING.replace('table = "tasks"', 'table = "Tasks"')
    config, _ = _load(tmp_path, text + second)
    assert [b.app.table for b in config.bindings] == ["tasks", "Tasks"]
    with pytest.raises(ConfigError, match="already synced"):
        _load(tmp_path, text + second.replace('"Tasks"', '"tasks"').replace("//h/", "//H:5432/"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(("busy_timeout = 5", "busy_timeout = nan"), r"connections\.app\.busy_timeout: .*NaN", id="nan"),
        pytest.param(("busy_timeout = 5", "busy_timeout = inf"), r"busy_timeout: .*at most a year", id="inf"),
        pytest.param(("busy_timeout = 5", "busy_timeout = 1e300"), r"busy_timeout: .*at most a year", id="1e300"),
        pytest.param(('base_url = "http://127.0.0.1:3000"', 'base_url = "http://127.0.0.1:3000"\ntimeout = nan'),
                     r"connections\.tasks\.timeout: .*NaN", id="timeout-nan"),
        pytest.param(('name = "tasks"', 'name = "tasks"\nresync_interval = "inf"'),
                     r"resync_interval: not a duration", id="resync-inf-text"),
        pytest.param(('name = "tasks"', 'name = "tasks"\npoll_interval = -inf'),
                     r"poll_interval: must be more than zero", id="poll-minus-inf"),
        pytest.param(('path = "/tasks"', 'path = "/tasks"\nwebhook = { tolerance = nan }'),
                     r"webhook\.tolerance: .*NaN", id="tolerance-nan"),
        pytest.param(('table = "tasks"', 'table = "tas\\u0000ks"'), r"app\.table: .*NUL", id="nul-table"),
        pytest.param(('title = "title"', 'title = "title"\n"no\\u0000te" = "note"'), r"NUL", id="nul-column"),
        pytest.param(('title = "title"', 'title = "title"\nnote = "id"'),
                     r"fields\.note maps the external id field 'id', which tandem never writes", id="id-written"),
        pytest.param(("Bearer ${TASKS_TOKEN}", "Bearer ${ 1X }"),
                     r"headers\.Authorization: '\$\{ 1X \}' is not a reference", id="malformed-reference"),
        pytest.param(("Bearer ${TASKS_TOKEN}", "Bearer ${TASKS_TOKEN"),
                     r"headers\.Authorization: '\$\{' is not a reference", id="unclosed-reference"),
    ],
)  # fmt: skip
def test_nonsense_is_refused_naming_the_key(tmp_path, change, expected):
    old, new = change
    text = GOOD.replace('path = "app.db"', 'path = "app.db"\nbusy_timeout = 5', 1).replace(old, new, 1)
    with pytest.raises(ConfigError, match=expected):
        _load(tmp_path, text)


def test_the_external_id_may_be_copied_into_the_app(tmp_path):
    config, _ = _load(
        tmp_path, GOOD.replace('title = "title"', 'title = "title"\nref = { external = "id", direction = "to-app" }')
    )
    assert config.bindings[0].field_configs()["ref"].external == "id"


def test_a_variable_set_to_nothing_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"Authorization: environment variable TASKS_TOKEN is set but empty"):
        _load(tmp_path, GOOD, environ={"TASKS_TOKEN": ""})


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "tandem.toml"
    path.write_bytes(GOOD.replace("tasks", "t\xe2ches", 1).encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte \d+\); save the file as UTF-8"):
        load_config(path, environ={"TASKS_TOKEN": "t0ken-value"})


def test_an_app_database_path_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "app.db").mkdir()
    with pytest.raises(ConfigError, match=r"connections\.app\.path: .*app\.db is a directory"):
        _load(tmp_path, GOOD)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2.5", 2.5), ("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("value", ["9" * 3600, "1e300", "nan", "inf", "400d", "8761h"])
def test_an_endless_or_meaningless_duration_in_the_environment_is_refused(monkeypatch, value):
    monkeypatch.setenv("TANDEM_RESYNC_INTERVAL", value)
    with pytest.raises(SettingsError, match="TANDEM_RESYNC_INTERVAL"):
        load_settings()


def test_bad_settings_name_the_variable(monkeypatch):
    monkeypatch.setenv("TANDEM_WORKERS", "many")
    monkeypatch.setenv("TANDEM_POLL_INTERVAL", "soon")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "TANDEM_WORKERS" in str(caught.value)
    assert "TANDEM_POLL_INTERVAL" in str(caught.value)


def test_the_id_field_refused_is_the_one_of_the_connection_type(tmp_path):
    couch = (
        GOOD.replace('type = "rest"', 'type = "couchdb"')
        .replace('path = "/tasks"\n', 'database = "tasks"\n')
        .replace('pagination = { type = "page", page_param = "_page", size_param = "_limit", size = 100 }\n', "")
    )
    config, _ = _load(tmp_path, couch.replace('title = "title"', 'title = "title"\nref = "id"'))
    assert config.bindings[0].field_configs()["ref"].external == "id"  # a document's own field
    with pytest.raises(ConfigError, match=r"fields\.ref maps the external id field '_id'"):
        _load(tmp_path, couch.replace('title = "title"', 'title = "title"\nref = "_id"'))


def test_status_masks_the_same_secrets_as_the_commands_that_load_the_whole_file(tmp_path):
    kinto = (
        GOOD.replace('type = "rest"', 'type = "kinto"\nauth = { user = "tandem", password = "literal-pw" }')
        .replace('path = "/tasks"\n', 'bucket = "b"\ncollection = "tasks"\n')
        .replace('pagination = { type = "page", page_param = "_page", size_param = "_limit", size = 100 }\n', "")
    )
    _, loaded = _load(tmp_path, kinto)
    names, masked = binding_names(tmp_path / "tandem.toml", environ={"TASKS_TOKEN": "t0ken-value"})
    assert names == ["tasks"]
    assert masked == loaded == {"t0ken-value", "literal-pw", "Basic dGFuZGVtOmxpdGVyYWwtcHc="}
    # Without the variables the connections need, status still masks what it can know.
    assert binding_names(tmp_path / "tandem.toml", environ={})[1] == {"literal-pw", "Basic dGFuZGVtOmxpdGVyYWwtcHc="}
