"""The HTTP port: bound before serving, with failures said in the operator's terms.

A socket error alone (`[Errno 98] Address already in use`) names neither the address nor
the setting that chose it; each failure here names both and what to do.
"""

from __future__ import annotations

import errno
import socket

from daemon.configfile import ConfigError


class AddressInUse(Exception):
    """Something else listens on TANDEM_HTTP_ADDR (a runtime failure: it may go away)."""


def bind(addr: str, host: str, port: int) -> socket.socket:
    """A listening socket on `host:port` (`addr`, as configured). IPPROTO_TCP is explicit
    because asyncio only turns Nagle off (TCP_NODELAY) on sockets that say so; without it
    every keep-alive response waits out a delayed ACK (about 40 ms)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except socket.gaierror:
        sock.close()
        raise ConfigError(f"TANDEM_HTTP_ADDR {addr}: unknown host {host!r}; use an address of this machine") from None
    except OSError as exc:
        sock.close()
        raise _said(exc, addr, host) from None
    sock.setblocking(False)
    return sock


def _said(exc: OSError, addr: str, host: str) -> Exception:
    if exc.errno == errno.EADDRINUSE:
        return AddressInUse(
            f"cannot listen on {addr} (TANDEM_HTTP_ADDR): address already in use; another tandem or"
            " another program listens there: stop it, or set TANDEM_HTTP_ADDR to a free port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"TANDEM_HTTP_ADDR {addr}: {host} is not an address of this machine")
    if exc.errno == errno.EACCES:
        return ConfigError(f"TANDEM_HTTP_ADDR {addr}: not allowed to listen there (ports below 1024 need privilege)")
    return ConfigError(f"TANDEM_HTTP_ADDR {addr}: cannot listen: {exc.strerror}")
