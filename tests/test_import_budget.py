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
        "segkit.backends.nnunet.slim",
        "segkit.cli.model",
        "segkit.data.check",
        # viz: rendering, plans reading and statistics are numpy/JSON only; dash and matplotlib load on use
        "segkit.cli.viz",
        "segkit.viz.render",
        "segkit.viz.arch",
        "segkit.viz.viewer",
        "segkit.data.stats",
        "segkit.metrics",
        "segkit.metrics.lesionwise",
        "segkit.metrics.voxel",
        "segkit.evaluation.run",
        "segkit.evaluation.reports",
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
        ["viz", "--help"],
        ["viz", "static", "--help"],
        ["viz", "app", "--help"],
        ["viz", "arch", "--help"],
        ["data", "stats", "--help"],
        ["model", "slim", "--help"],
    ],
    ids=" ".join,
)
def test_commands_stay_light(argv: list[str]) -> None:
    code = f"from segkit.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == []


def _small_eval_folders(tmp_path) -> tuple[str, str]:
    import nibabel as nib
    import numpy as np

    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[3:8, 3:8, 3:8] = 2
    labels[4:6, 4:6, 4:6] = 3
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / folder / "case.nii.gz"))
    return str(tmp_path / "gt"), str(tmp_path / "pred")


def test_eval_command_stays_light(tmp_path) -> None:
    gt, pred = _small_eval_folders(tmp_path)
    argv = ["-q", "eval", gt, pred, "-o", str(tmp_path / "out"), "--skip-nnunet", "--no-figure", "-j", "1"]
    code = f"from segkit.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == []
    assert (tmp_path / "out" / "full_metrics.json").is_file()


def test_eval_figure_loads_only_matplotlib(tmp_path) -> None:
    gt, pred = _small_eval_folders(tmp_path)
    argv = ["-q", "eval", gt, pred, "-o", str(tmp_path / "out"), "--skip-nnunet", "-j", "1"]
    code = f"from segkit.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == ["matplotlib"]
    assert (tmp_path / "out" / "lesion_metrics.png").is_file()


def test_root_help_imports_no_command_module() -> None:
    """`segkit --help` lists `segkit.cli.COMMANDS` without importing them, numpy, pydantic or typer's rich help."""
    code = (
        "from segkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "import sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'pydantic', 'yaml')"
        " or m.startswith('segkit.') and m not in ('segkit.cli', 'segkit.cli._argv', 'segkit.errors')"
        " or m in ('typer.rich_utils', 'rich.markdown', 'rich.syntax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
