"""docs/cli.md is generated from the CLI itself, so it cannot drift from `segkit --help`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
REGENERATE = "uv run typer segkit.cli utils docs --name segkit --output docs/cli.md"


def generate() -> str:
    typer = Path(sys.executable).parent / "typer"
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run(
        [str(typer), "segkit.cli", "utils", "docs", "--name", "segkit"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return out.stdout


def test_cli_reference_is_current() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert generate().strip() == committed.strip(), f"docs/cli.md is out of date; regenerate it with: {REGENERATE}"
