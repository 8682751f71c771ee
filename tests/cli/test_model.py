"""`segkit model slim`: a table of sizes, one-line errors, exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from _nnunet_model import MODEL_NAME, write_model


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("slim_cli") / "res")


@pytest.fixture
def model(tmp_path: Path, template: Path) -> Path:
    dst = tmp_path / MODEL_NAME
    shutil.copytree(template, dst)
    return dst


def test_slim_copy_prints_sizes_per_checkpoint(run_cli, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "slim"
    result = run_cli("model", "slim", model, "-o", out)
    assert result.code == 0, result.err
    rows = [line for line in result.out.splitlines() if "fold_0/" in line]
    assert [row.split()[1] for row in rows] == ["fold_0/checkpoint_final.pth", "fold_0/checkpoint_best.pth"]
    assert all("KiB" in row and "slimmed (" in row and "saved)" in row for row in rows)
    assert f"slim copy written: {out}" in result.out
    assert set(torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=True)) == {
        "network_weights",
        "init_args",
        "trainer_name",
        "inference_allowed_mirroring_axes",
    }


def test_in_place_then_nothing_to_do(run_cli, model: Path) -> None:
    result = run_cli("model", "slim", model, "--checkpoint", "checkpoint_best.pth")
    assert result.code == 0, result.err
    assert "fold_0/checkpoint_best.pth" in result.out
    assert "checkpoint_final.pth" not in result.out
    assert "slimmed in place:" in result.out
    again = run_cli("model", "slim", model, "--checkpoint", "checkpoint_best.pth")
    assert again.code == 0
    assert "already slim" in again.out
    assert "nothing to do: every checkpoint is slim already" in again.out


def test_non_empty_output_is_refused_unless_overwrite(run_cli, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    result = run_cli("model", "slim", model, "-o", out)
    assert result.code == 1
    assert result.err.splitlines() == [
        f"error: {out}: output folder is not empty",
        "hint: choose another folder, or pass --overwrite to replace it",
    ]
    assert run_cli("model", "slim", model, "-o", out, "--overwrite").code == 0
    assert not (out / "x").exists()


def test_not_a_model_folder_is_one_line(run_cli, tmp_path: Path) -> None:
    result = run_cli("model", "slim", tmp_path)
    assert result.code == 1
    assert result.err.splitlines()[0] == f"error: {tmp_path}: not an nnU-Net model folder (plans.json missing)"
    assert result.out == ""


def test_a_bad_checkpoint_name_is_a_usage_error(run_cli, model: Path) -> None:
    result = run_cli("model", "slim", model, "--checkpoint", "fold_0/checkpoint_final.pth")
    assert result.code == 2
    assert result.err.splitlines() == [
        "error: fold_0/checkpoint_final.pth: not a checkpoint file name (expected e.g. checkpoint_final.pth)"
    ]


def test_a_foreign_checkpoint_is_one_line_and_nothing_is_written(run_cli, model: Path, tmp_path: Path) -> None:
    torch.save({"model": {}}, model / "fold_0" / "checkpoint_best.pth")
    final = (model / "fold_0" / "checkpoint_final.pth").read_bytes()
    result = run_cli("model", "slim", model)
    assert result.code == 1
    assert result.err.splitlines() == [
        f"error: {model}/fold_0/checkpoint_best.pth: not an nnU-Net checkpoint (no network_weights)"
    ]
    assert (model / "fold_0" / "checkpoint_final.pth").read_bytes() == final


def test_model_without_a_subcommand_shows_help(run_cli) -> None:
    result = run_cli("model")
    assert "slim" in result.out
