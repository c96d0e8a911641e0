"""The bindings file: every error names the file, the key and what is wrong."""

from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
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


def test_two_bindings_on_one_table_are_refused(tmp_path):
    second = GOOD[GOOD.index("[[bindings]]") :].replace('name = "tasks"', 'name = "again"')
    with pytest.raises(ConfigError, match="already synced by another binding"):
        _load(tmp_path, GOOD + second)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2.5", 2.5), ("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_settings_name_the_variable(monkeypatch):
    monkeypatch.setenv("TANDEM_WORKERS", "many")
    monkeypatch.setenv("TANDEM_POLL_INTERVAL", "soon")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "TANDEM_WORKERS" in str(caught.value)
    assert "TANDEM_POLL_INTERVAL" in str(caught.value)
