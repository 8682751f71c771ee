"""Run a Dash app locally (used by the CLI; tests and notebooks can serve `create_app(...)` themselves)."""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import webbrowser
from typing import TYPE_CHECKING

from segkit.errors import ConfigError

if TYPE_CHECKING:
    import dash

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_url(host: str, port: int) -> str:
    """URL a browser on this machine uses for an app bound to `host`:`port`."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def check_debug_host(host: str, debug: bool) -> None:
    """Refuse Dash debug mode on an interface other machines can reach.

    Debug mode turns on Werkzeug's interactive debugger, which runs Python typed into a browser page.

    Raises:
        ConfigError: `debug` with a non-loopback `host`.
    """
    if debug and not is_loopback(host):
        msg = f"--debug only with a loopback --host (got {host}): the debugger would let anyone run code here"
        raise ConfigError(msg, hint="drop --debug, or use --host 127.0.0.1")


def serve(app: dash.Dash, *, host: str, port: int, debug: bool = False, open_browser: bool = False) -> None:
    """Serve `app` until interrupted.

    Args:
        app: The Dash app.
        host: Interface to bind; anything but loopback is logged as a warning (the apps have no login).
        port: Port.
        debug: Dash debug mode with hot reload (the reloader runs the command again in a child process);
            loopback hosts only.
        open_browser: Open the page in the default browser shortly after start.

    Raises:
        ConfigError: `debug` with a non-loopback `host` (see `check_debug_host`).
    """
    check_debug_host(host, debug)
    if not is_loopback(host):
        log.warning("listening on %s: anyone who can reach this machine can browse the data (no login)", host)
    # With the reloader, only the child process (WERKZEUG_RUN_MAIN=true) serves; open the page once, from it.
    if open_browser and (not debug or os.environ.get("WERKZEUG_RUN_MAIN") == "true"):
        timer = threading.Timer(1.0, webbrowser.open, args=(app_url(host, port),))
        timer.daemon = True
        timer.start()
    # The version check asks PyPI for the latest Dash in debug mode; segkit runs offline.
    app.run(host=host, port=port, debug=debug, dev_tools_disable_version_check=True)
