"""`segkit --help`, config validation and the data commands must not load heavy frameworks."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "monai", "nnunetv2", "dash", "matplotlib", "SimpleITK")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1])  # a list literal printed by the probe


@pytest.mark.parametrize(
    "module",
    [
        "segkit",
        "segkit.cli",
        "segkit.config",
        "segkit.api",
        "segkit.backends.registry",
        "segkit.backends.nnunet",
        "segkit.backends.monai_bundle",
        "segkit.data.check",
    ],
)
def test_module_import_stays_light(module: str) -> None:
    assert _loaded_after(f"import {module}") == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["data", "--help"],
        ["train", "--help"],
        ["infer", "--help"],
        ["backends"],
        ["config", "show"],
        ["config", "schema"],
    ],
    ids=" ".join,
)
def test_commands_stay_light(argv: list[str]) -> None:
    code = f"from segkit.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == []
