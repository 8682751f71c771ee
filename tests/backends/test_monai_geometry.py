"""MONAI training geometry: crop size and spacing from the options, the dataset's nnU-Net plans, or the defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segkit.backends.monai_bundle import MonaiOptions
from segkit.backends.monai_bundle.geometry import (
    network_divisor,
    plans_geometry,
    resolve_geometry,
    round_patch_size,
    run_plans_identifier,
)
from segkit.errors import DataError

SEGRESNET = {"blocks_down": [1, 2, 2, 4]}  # three halvings: sizes are multiples of 8


def write_plans(folder: Path, *, patch: list[int], spacing: list[float], name: str = "nnUNetPlans") -> Path:
    """A plans file as nnU-Net writes it: sizes in its reader's array order (z, y, x)."""
    folder.mkdir(parents=True, exist_ok=True)
    plans = {
        "dataset_name": folder.name,
        "plans_name": name,
        "original_median_spacing_after_transp": spacing,
        "transpose_forward": [0, 1, 2],
        "configurations": {
            "2d": {"patch_size": [192, 160], "spacing": spacing[1:]},
            "3d_fullres": {"patch_size": patch, "spacing": spacing, "batch_size": 2},
            "3d_lowres": {"inherits_from": "3d_fullres", "spacing": [s * 2 for s in spacing]},
        },
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(plans))
    return path


def test_anisotropic_plans_are_read_in_x_y_z_order(tmp_path: Path) -> None:
    # images of 0.8 x 0.9 x 3 mm (X Y Z) read by SimpleITK: nnU-Net stores the spacing as z y x
    write_plans(tmp_path / "Dataset501_X", patch=[28, 160, 192], spacing=[3.0, 0.9, 0.8])
    found = resolve_geometry(MonaiOptions(), tmp_path / "Dataset501_X", SEGRESNET)
    assert found.spacing == (0.8, 0.9, 3.0)
    assert found.patch_size == (192, 160, 32)  # 28 rounded to the nearest multiple of 8
    assert "nnUNetPlans.json 3d_fullres 192 160 28, rounded to multiples of 8" in found.patch_size_source
    assert found.spacing_source.endswith("nnUNetPlans.json 3d_fullres")
    assert found.to_dict()["spacing"] == [0.8, 0.9, 3.0]
    assert "spacing 0.8 0.9 3 mm" in found.describe()


def test_a_given_value_wins_over_the_plans(tmp_path: Path) -> None:
    write_plans(tmp_path / "D", patch=[128, 128, 96], spacing=[2.0, 1.0, 1.0])
    found = resolve_geometry(MonaiOptions(patch_size=(64, 64, 64)), tmp_path / "D", SEGRESNET)
    assert (found.patch_size, found.patch_size_source) == ((64, 64, 64), "given")
    assert found.spacing == (1.0, 1.0, 2.0)  # not given: still the plans'
    both = resolve_geometry(MonaiOptions(patch_size=(64, 64, 64), spacing=(1.5, 1.5, 1.5)), tmp_path / "D", SEGRESNET)
    assert (both.spacing, both.spacing_source) == ((1.5, 1.5, 1.5), "given")


def test_without_plans_the_defaults_hold(tmp_path: Path) -> None:
    found = resolve_geometry(MonaiOptions(), tmp_path / "not_planned", SEGRESNET)
    assert (found.patch_size, found.spacing) == ((128, 128, 128), (1.0, 1.0, 1.0))
    assert (found.patch_size_source, found.spacing_source) == ("default", "default")


def test_the_plans_the_run_names_are_read(tmp_path: Path) -> None:
    write_plans(tmp_path / "D", patch=[128, 128, 128], spacing=[1.0, 1.0, 1.0])
    write_plans(tmp_path / "D", patch=[96, 112, 80], spacing=[1.0, 1.0, 1.0], name="nnUNetResEncUNetMPlans")
    plans = run_plans_identifier("backends:\n  nnunet:\n    planner: resenc-m\n")
    assert plans == "nnUNetResEncUNetMPlans"
    assert resolve_geometry(MonaiOptions(), tmp_path / "D", SEGRESNET, plans=plans).patch_size == (80, 112, 96)
    assert run_plans_identifier("backends:\n  nnunet:\n    plans: MyPlans\n") == "MyPlans"
    assert run_plans_identifier("") is None
    assert run_plans_identifier("backends:\n  monai: {}\n") is None


def test_the_divisor_follows_the_network() -> None:
    assert network_divisor(SEGRESNET) == 8
    assert network_divisor({"blocks_down": [1, 2, 2, 4, 4]}) == 16
    assert network_divisor({}) == 8  # MONAI's SegResNet default blocks_down (1, 2, 2, 4)
    assert round_patch_size((20, 8, 100), 16) == (16, 16, 96)
    assert round_patch_size((24, 40, 1), 16) == (32, 48, 16)  # never below the divisor


def test_broken_plans_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "D"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text("{not json")
    with pytest.raises(DataError, match=r"nnUNetPlans.json: not valid JSON"):
        resolve_geometry(MonaiOptions(), folder, SEGRESNET)
    # both values given: the plans are not needed, so not read
    given = MonaiOptions(patch_size=(64, 64, 64), spacing=(1.0, 1.0, 1.0))
    assert resolve_geometry(given, folder, SEGRESNET).patch_size_source == "given"
    write_plans(folder, patch=[128, 128], spacing=[1.0, 1.0, 1.0])
    with pytest.raises(DataError, match="needs 3 positive patch_size and spacing values"):
        resolve_geometry(MonaiOptions(), folder, SEGRESNET)


def test_plans_without_3d_fullres_give_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nnUNetPlans.json"
    path.write_text(json.dumps({"configurations": {"2d": {"patch_size": [192, 160], "spacing": [1.0, 1.0]}}}))
    assert plans_geometry(path) is None
    assert resolve_geometry(MonaiOptions(), tmp_path, SEGRESNET).patch_size_source == "default"
