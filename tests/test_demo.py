"""`segkit demo --fast`: every step of the loop runs for real on a tiny cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segkit.config.models import DemoConfig
from segkit.demo import DEMO_MARKER, FAST, UMAMBA2_FAST, UMAMBA2_FULL, recipe_of


@pytest.mark.slow
def test_fast_demo_runs_every_step(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--fast", "--device", "cpu", "--output-dir", out, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert list(data["seconds"]) == [
        "synthesise cohort",
        "prepare nnU-Net dataset",
        "write splits",
        "train MONAI fold 0",
        "predict held-out cases",
        "evaluate",
        "static panel",
        "GIF",
    ]
    for name in ("model", "predictions", "reports", "figure", "GIF", "splits", "nnU-Net dataset", "run config"):
        assert Path(data["paths"][name]).exists(), name
    assert len(list((out / "predictions").glob("*.nii.gz"))) == FAST.test_cases
    assert set(data["wt_dice"]) == {f"BraTS-GLI-{100 + i:05d}-000" for i in range(FAST.test_cases)}
    assert set(data["regions"]) == {"WT", "TC", "NETC", "SNFH", "ET", "RC"}
    assert (out / "evaluation" / "lesion_metrics.json").is_file()
    # a second run needs --overwrite
    again = run_cli("demo", "--fast", "--device", "cpu", "--output-dir", out)
    assert again.code == 1
    assert "holds an earlier demo run" in again.err


def test_demo_never_replaces_a_foreign_folder(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    result = run_cli("demo", "--fast", "--output-dir", out, "--overwrite")
    assert result.code == 1
    assert "was not made by segkit demo" in result.err
    assert (out / "notes.txt").read_text() == "precious"
    assert not (out / DEMO_MARKER).exists()


def test_recipe_overrides() -> None:
    recipe = recipe_of(DemoConfig(fast=True, cases=7, stage2_epochs=3))
    assert (recipe.cases, recipe.test_cases, recipe.stage2_epochs, recipe.shape) == (7, FAST.test_cases, 3, 32)


def test_api_does_not_import_the_demo() -> None:
    """The demo is built on `segkit.api`; the api must not import it back (no import cycle)."""
    import ast

    import segkit.api

    tree = ast.parse(Path(segkit.api.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "segkit.demo" not in imported
    assert not hasattr(segkit.api, "demo")


@pytest.mark.slow
def test_fast_umamba2_demo_plans_trains_and_predicts(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--backend", "umamba2", "--fast", "--device", "cpu", "--output-dir", out, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    steps = list(data["seconds"])
    assert steps[3:5] == ["plan and preprocess (nnU-Net)", "train UMamba2 fold 0"]
    assert "nnUNetTrainerUMamba2" in data["paths"]["model"]
    assert len(list((out / "predictions").glob("*.nii.gz"))) == UMAMBA2_FAST.test_cases
    assert set(data["regions"]) == {"WT", "TC", "NETC", "SNFH", "ET", "RC"}


def test_umamba2_recipe() -> None:
    recipe = recipe_of(DemoConfig(backend="umamba2"))
    assert recipe == UMAMBA2_FULL
    assert recipe_of(DemoConfig(backend="umamba2", epochs=3, cases=6)).epochs == 3
    fast = recipe_of(DemoConfig(backend="umamba2", fast=True))
    assert (fast.epochs, fast.iterations_per_epoch, fast.shape) == (1, 2, 32)
