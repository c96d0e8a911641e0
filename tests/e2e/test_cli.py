"""The `tandem` command as a new user meets it: help, version, status anywhere, the port."""

import socket

import pytest

from tests.support.daemon import Daemon

pytestmark = pytest.mark.anyio


def test_help_names_the_environment_and_every_option(daemon: Daemon):
    top = daemon.command("--help")
    assert top.returncode == 0
    for name in ("TANDEM_CONFIG", "TANDEM_STATE", "TANDEM_HTTP_ADDR", "TANDEM_API_TOKEN", "exit codes"):
        assert name in top.stdout
    plan = daemon.command("plan", "--help").stdout
    assert "plan this binding only" in plan
    assert "--json" in plan and "print one JSON document" in plan


def test_version(daemon: Daemon):
    result = daemon.command("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("tandem 0.")


async def test_status_needs_none_of_the_connections_variables(daemon: Daemon):
    await daemon.start()
    assert daemon.stop() == 0
    del daemon.env["TASKS_TOKEN"]
    result = daemon.command("status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tasks: ")
    assert daemon.command("plan").returncode == 2  # it reaches the API, so it needs them


def test_a_port_in_use_names_the_address_and_the_variable(daemon: Daemon):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        daemon.env["TANDEM_HTTP_ADDR"] = addr
        result = daemon.command("run")
    assert result.returncode == 1
    assert f"cannot listen on {addr} (TANDEM_HTTP_ADDR): address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("no-such-host.invalid:8787", "TANDEM_HTTP_ADDR no-such-host.invalid:8787: unknown host"),
        ("192.0.2.1:8787", "TANDEM_HTTP_ADDR 192.0.2.1:8787: 192.0.2.1 is not an address of this machine"),
    ],
)
def test_an_address_tandem_cannot_listen_on_is_a_configuration_error(daemon: Daemon, addr, expected):
    daemon.env["TANDEM_HTTP_ADDR"] = addr
    daemon.env["TANDEM_API_TOKEN"] = "a-token-long-enough-for-any-address"
    result = daemon.command("run")
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
