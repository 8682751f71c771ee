"""``python -m segkit`` and the ``segkit`` console script.

The entry point is here rather than in `segkit.cli` so that a Ctrl-C during start-up (importing the CLI
takes a few hundred milliseconds) ends like any other: one line and exit 130, no traceback.
"""

from __future__ import annotations

import signal
import sys


def main() -> None:
    """Run the CLI; a Ctrl-C that arrives before the CLI's own handler is active still ends quietly."""
    try:
        from segkit.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        interrupted()


def interrupted() -> None:
    """Say "interrupted" once and exit 130 (128 + SIGINT, what shells expect); further Ctrl-Cs are ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    raise SystemExit(130) from None


if __name__ == "__main__":
    main()
