"""The `tandem` command.

Exit codes: 0 success; 2 invalid configuration or usage (the message names the file,
the key and what is wrong); 1 a runtime failure. With --json a command prints one
JSON document on stdout and logs on stderr; `tandem run` logs to stdout.

Each command imports what it needs when it runs (`daemon.commands`): `--help` loads
argparse alone, and `status` neither the HTTP stack nor the connectors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

ENVIRONMENT = """\
environment (each command reads the same; the README lists every variable):
  TANDEM_CONFIG     the bindings file (default: tandem.toml)
  TANDEM_STATE      the state database (default: tandem-state.db)
  TANDEM_HTTP_ADDR  host:port of health, metrics, webhooks and the admin API
                    (default: 127.0.0.1:8787)
  TANDEM_API_TOKEN  the admin API's token (default: made by `run` in <state>.api-token)
  TANDEM_LOG_LEVEL, TANDEM_LOG_FORMAT, TANDEM_POLL_INTERVAL, TANDEM_RESYNC_INTERVAL, ...

exit codes: 0 success, 1 a runtime failure, 2 invalid configuration or usage"""


class _Version(argparse.Action):
    """`--version`, read from the installed package only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print tandem's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("tandem")
        except PackageNotFoundError:
            found = "unknown (not installed)"
        print(f"tandem {found}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem",
        description="Two-way sync daemon: keeps an app's table and an external app's records in sync.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_text, description=help_text, epilog=ENVIRONMENT,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        p.add_argument("--config", type=Path, help="the bindings file (default: $TANDEM_CONFIG, else tandem.toml)")
        return p

    def one_binding(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--binding", metavar="NAME", help=f"{what} this binding only (default: every binding)")

    def as_json(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print one JSON document instead of text")

    command("run", "run the daemon")
    plan = command("plan", "dry run: what `run` would write now; writes nothing")
    one_binding(plan, "plan")
    as_json(plan)
    status = command("status", "links by state, errors and conflicts per binding, from the state database")
    as_json(status)
    command("check", "validate the configuration and reach each connection and binding")
    resync = command("resync", "ask the running daemon for a full resync now")
    one_binding(resync, "resync")
    resync.add_argument(
        "--allow-deletes", action="store_true", help="carry out the deletions the mass-delete guard holds back"
    )
    changelog = command("changelog", "install or remove the app-side change log (triggers)")
    changelog.add_argument("action", choices=["install", "remove"])
    one_binding(changelog, "act on")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_cli(argv))


def run_cli(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from daemon import commands

    return commands.run_command(args)


if __name__ == "__main__":
    main()
