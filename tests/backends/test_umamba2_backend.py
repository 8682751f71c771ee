"""UMamba2 backend: registration, options, trainer names and the checks that run before nnU-Net starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from segkit.backends.base import DatasetRef, TrainRequest
from segkit.backends.nnunet import NnUNetOptions, layout
from segkit.backends.registry import discover, list_backends, load_backend
from segkit.backends.umamba2 import UMamba2Backend
from segkit.backends.umamba2.options import CONFIGURATION, TRAINER, UMamba2Options
from segkit.errors import ConfigError, DataError, MissingDependencyError


def test_registered_through_the_entry_point_with_its_kernel() -> None:
    assert discover()["umamba2"].value == "segkit.backends.umamba2:UMamba2Backend"
    info = next(i for i in list_backends() if i.name == "umamba2")
    assert info.available, info.status
    assert info.note.startswith("Mamba2 kernel here: ")
    kernel = info.note.removeprefix("Mamba2 kernel here: ")
    assert kernel.split()[0] in ("torch", "mamba-ssm")
    backend = load_backend("umamba2")
    assert isinstance(backend, UMamba2Backend)
    assert backend.name == "umamba2"


def test_defaults_are_the_recipe_on_a_residual_encoder() -> None:
    opts = UMamba2Options()
    assert opts.configuration == CONFIGURATION
    assert opts.trainer == TRAINER
    assert opts.planner_class == "nnUNetPlannerResEncM"
    assert (opts.accumulation_steps, opts.grad_clip, opts.kernel) == (1, 12.0, "auto")
    # the recipe's planner, by preset and by nnU-Net class name
    assert UMamba2Options(planner="resenc-l-torchres").plans_identifier == "nnUNetResEncUNetLPlans_torchres"
    named = UMamba2Options(planner="nnUNetPlannerResEncL_torchres")
    assert (named.planner, named.plans_identifier) == ("resenc-l-torchres", "nnUNetResEncUNetLPlans_torchres")
    assert NnUNetOptions(planner="nnUNetPlannerResEncL").plans_identifier == "nnUNetResEncUNetLPlans"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"accumulation_steps": 0}, "accumulation_steps"),
        ({"grad_clip": -1}, "grad_clip"),
        ({"keep_heads": True}, "keep_heads needs pretrained_weights"),
        ({"features_per_stage": [8, 16, 50], "headdim": 16}, "not divisible by headdim 16"),
        ({"kernel": "cuda"}, "kernel"),
        ({"layout": "stsr"}, "layout"),
    ],
)
def test_bad_options_are_refused(values: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        UMamba2Options(**values)


def test_mirror_axes_are_spatial_axes() -> None:
    assert NnUNetOptions(mirror_axes=[2, 1]).mirror_axes == [1, 2]
    for bad in ([3], [1, 1], [-1]):
        with pytest.raises(ValidationError, match="mirror axes"):
            NnUNetOptions(mirror_axes=bad)


def test_accumulation_and_clipping_name_their_own_trainer() -> None:
    opts = UMamba2Options(accumulation_steps=2, grad_clip=0.5, epochs=3)
    name = layout.derived_trainer_name(opts)
    assert name == "nnUNetTrainerUMamba2_segkit_e3_a2_c0p5"
    assert layout.trainer_overrides(opts) == {"num_epochs": 3, "accumulation_steps": 2, "grad_clip_norm": 0.5}
    back = layout.options_for_trainer(UMamba2Options(), name)
    assert (back.trainer, back.epochs, back.accumulation_steps, back.grad_clip) == (TRAINER, 3, 2, 0.5)
    assert layout.derived_trainer_name(UMamba2Options(grad_clip=12)) == TRAINER  # the default is no override
    assert layout.derived_trainer_name(UMamba2Options(grad_clip=0)) == f"{TRAINER}_segkit_c0"


def test_trainer_modules_make_the_folder_self_sufficient(tmp_path: Path) -> None:
    ds = DatasetRef("Dataset501_X", tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    modules = UMamba2Backend.trainer_modules
    assert layout.write_trainer_module(ds, UMamba2Options(), modules) == TRAINER
    folder = layout.ext_trainer_dir(ds)
    assert "from segkit.backends.umamba2.trainer import nnUNetTrainerUMamba2" in (folder / f"{TRAINER}.py").read_text()
    name = layout.write_trainer_module(ds, UMamba2Options(accumulation_steps=2), modules)
    source = (folder / f"{name}.py").read_text()
    assert "base_module='segkit.backends.umamba2.trainer'" in source
    assert "accumulation_steps=2" in source
    compile(source, name, "exec")  # the generated module is valid Python


def _planned(tmp_path: Path, configurations: dict) -> DatasetRef:
    ds = DatasetRef("Dataset501_X", tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    (ds.raw_dir / "imagesTr").mkdir(parents=True)
    (ds.raw_dir / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "channel_names": {}}))
    ds.preprocessed_dir.mkdir(parents=True)
    plans = {"plans_name": "nnUNetResEncUNetMPlans", "configurations": configurations}
    (ds.preprocessed_dir / "nnUNetResEncUNetMPlans.json").write_text(json.dumps(plans))
    return ds


def test_plans_without_the_umamba2_configuration_say_how_to_add_it(tmp_path: Path) -> None:
    ds = _planned(tmp_path, {"3d_fullres": {"data_identifier": "nnUNetResEncUNetMPlans_3d_fullres"}})
    with pytest.raises(DataError) as err:
        UMamba2Backend().check(TrainRequest(dataset=ds, fold="all", device="cpu"), UMamba2Options())
    assert "3d_fullres_umamba2" in str(err.value)
    assert "segkit data plan --backend umamba2" in (err.value.hint or "")


def test_mamba_ssm_kernel_needs_cuda_and_mamba_ssm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segkit.backends.umamba2 import backend as module

    backend = UMamba2Backend()
    opts = UMamba2Options(kernel="mamba-ssm")
    ds = DatasetRef("Dataset501_X", tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    monkeypatch.setattr(module.UMamba2Backend, "_check_train", lambda self, request, options: None)
    with pytest.raises(ConfigError, match="needs --device cuda"):
        backend.check(TrainRequest(dataset=ds, fold="all", device="cpu"), opts)
    from segkit.backends.umamba2 import mamba2

    monkeypatch.setattr(mamba2, "_load_fused", lambda: (None, "ImportError: no mamba_ssm"))
    with pytest.raises(MissingDependencyError, match="mamba-ssm cannot be imported"):
        backend.check(TrainRequest(dataset=ds, fold="all", device="cuda"), opts)


def test_kernel_environment_overrides_the_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from torch import nn

    from segkit.backends.umamba2.network import KERNEL_ENV, UMambaBot2

    def build() -> UMambaBot2:
        return UMambaBot2(
            input_channels=1,
            n_stages=2,
            features_per_stage=[8, 16],
            conv_op=nn.Conv3d,
            kernel_sizes=3,
            strides=[1, 2],
            n_blocks_per_stage=1,
            num_classes=2,
            n_conv_per_stage_decoder=1,
            headdim=8,
            mamba_kernel="auto",
        )

    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert build().mamba_layer.mamba.kernel == "auto"
    monkeypatch.setenv(KERNEL_ENV, "torch")
    assert build().mamba_layer.mamba.kernel == "torch"
