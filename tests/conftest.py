from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docservers import CouchServer, KintoServer, couch_server, kinto_server
from tests.support.otheruser import reachable_install


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def kinto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KintoServer]:
    """One Kinto server for the session; each test makes its own bucket."""
    with kinto_server(tmp_path_factory.mktemp("kinto")) as server:
        yield server


@pytest.fixture(scope="session")
def couch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CouchServer]:
    """One PouchDB Server for the session; each test makes its own database."""
    with couch_server(tmp_path_factory.mktemp("couch")) as server:
        yield server


@pytest.fixture(scope="session")
def other_user_bin() -> Iterator[Path]:
    """`bin` of a tandem install that any user can run (the checkout may be private)."""
    yield from reachable_install()
