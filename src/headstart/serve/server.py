"""Start the app on uvicorn: check the address is safe to bind, load the runs, serve until
SIGTERM or Ctrl+C, which stop accepting and let the requests in flight finish."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import signal
import socket
from pathlib import Path

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from .. import progress
from ..errors import HeadstartError
from .app import Settings, create_app
from .models import ServedModel, load_served

TOKEN_VARIABLE = "HEADSTART_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Anyone who can reach a non-loopback address could use the model: require a token there."""
    if not is_loopback(host) and not token:
        raise HeadstartError(
            f"binding {host} lets other machines use the model: give --token SECRET (or set {TOKEN_VARIABLE}), or bind 127.0.0.1."
        )


def load_runs(runs: list[str | Path], device: str) -> dict[str, ServedModel]:
    """Each run under its directory's name (two runs of one name are an error, not a shadowing)."""
    models: dict[str, ServedModel] = {}
    for run in runs:
        name = Path(run).resolve().name
        if name in models:
            raise HeadstartError(f"two runs are named {name!r} ({models[name].run} and {run}); rename one directory.")
        progress.announce(f"loading {run}")
        models[name] = load_served(run, name, device)
    return models


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one, chosen by the system). Made with the protocol named,
    IPPROTO_TCP: asyncio turns Nagle's algorithm off only on sockets that say so, and with it on a
    kept-alive connection waits 40 ms for the client's delayed ACK before each response's end."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise HeadstartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or --port (--port 0 picks a free one).") from None
    return sock


def serve(models: dict[str, ServedModel], settings: Settings, sock: socket.socket, *, quiet: bool = False, max_connections: int = 128) -> None:
    """Serve ``models`` on ``sock`` (from :func:`bind`, taken before the models load, so a busy port
    is said at once) until SIGTERM or Ctrl+C."""
    host = sock.getsockname()[0]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    print(
        f"serving {', '.join(models)} at {url}/  (page /, API /v1/models, docs /docs, metrics /metrics); "
        "Ctrl+C or SIGTERM stops after the requests in flight",
        flush=True,
    )
    config = uvicorn.Config(
        create_app(models, settings), log_config=_log_config(quiet), access_log=not quiet, lifespan="on",
        limit_concurrency=max_connections, timeout_graceful_shutdown=int(settings.timeout) + 1,
    )
    # uvicorn drains on SIGTERM or Ctrl+C, then raises the signal again for the handler it found:
    # no-op ones let a drained server exit 0 (a failure status would read as a crash to systemd or
    # k8s) and keep asyncio's SIGINT handler from turning the re-raised signal into a traceback.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda number, frame: None)
    server = uvicorn.Server(config)
    forced = _CancelledLifespan(server)
    logging.getLogger("uvicorn.error").addFilter(forced)
    try:
        server.run(sockets=[sock])
    finally:
        logging.getLogger("uvicorn.error").removeFilter(forced)
    if server.force_exit:  # Ctrl+C twice: uvicorn stops waiting for the requests in flight
        print("stopped at once (Ctrl+C twice): any requests still in flight were dropped", flush=True)
    else:
        print("stopped: the requests in flight were answered", flush=True)


class _CancelledLifespan(logging.Filter):
    """A second Ctrl+C makes uvicorn exit without the app's shutdown, so the loop cancels the
    lifespan task; Starlette hands the CancelledError's traceback to uvicorn as a failed shutdown,
    which logs it as an ERROR (a cancellation it asked for; uvicorn PR 2367). Dropped then, and only
    then: every other error is logged as uvicorn logs it."""

    def __init__(self, server: uvicorn.Server):
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        cancelled = (record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError)) or (
            record.getMessage().rstrip().endswith(f"{asyncio.CancelledError.__module__}.CancelledError")
        )
        return not (cancelled and self.server.force_exit)


def _log_config(quiet: bool) -> dict:
    """uvicorn's own logging, less its start-up chatter (our line above says where it listens);
    one access line per request unless -q."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn.error"]["level"] = "WARNING"
    config["loggers"]["uvicorn.access"]["level"] = "WARNING" if quiet else "INFO"
    return config
