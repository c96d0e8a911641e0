from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import AppDb, Daemon, bindings_toml
from tests.support.servers import sample_app_process


@pytest.fixture
def external() -> Iterator[str]:
    with sample_app_process("--pagination", "page") as url:
        yield url


@pytest.fixture
def app_db(tmp_path: Path) -> AppDb:
    return AppDb(tmp_path / "app.db")


@pytest.fixture
def daemon(tmp_path: Path, external: str, app_db: AppDb) -> Iterator[Daemon]:
    (tmp_path / "tandem.toml").write_text(bindings_toml(external))
    process = Daemon(tmp_path)
    yield process
    process.kill()
