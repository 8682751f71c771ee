"""`segkit viz arch`: plans resolution, inheritance, network descriptions, table and figures.

The fixture plans in ``plans/`` come from real nnU-Net 2.8.1 planning (see ``plans/README.md``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from segkit.errors import ConfigError, DataError
from segkit.viz.arch import describe, load_plans, locate_plans, read_architecture, resolve_configuration

PLANS = Path(__file__).parent / "plans"
PLAIN = PLANS / "nnUNetPlans.json"
RESENC = PLANS / "nnUNetResEncUNetMPlans.json"
MAMBA = PLANS / "nnUNetResEncUNetMPlans_mambabot2.json"
MAMBA_CONFIG = "3d_fullres_mambabot2_bs1"
MAMBA_ORANGE = (242, 142, 43)


def _plans(path: Path) -> dict:
    return json.loads(path.read_text())


# --- descriptions of real plans --------------------------------------------------------------------


def test_plain_conv_unet_from_the_default_planner() -> None:
    arch = read_architecture(PLAIN)
    kw = _plans(PLAIN)["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert arch.kind == "PlainConvUNet"
    assert arch.patch_size == (128, 160, 112)
    assert [s.features for s in arch.encoder] == kw["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert [s.blocks for s in arch.encoder] == [2] * 6
    assert not any(s.residual for s in arch.encoder)
    assert arch.encoder[-1].part == "bottleneck"
    # feature maps: the patch divided by the cumulative strides
    cumulative = np.cumprod(np.array(kw["strides"]), axis=0)
    assert [s.size for s in arch.encoder] == [tuple(np.array(arch.patch_size) // c) for c in cumulative]
    assert [s.features for s in arch.decoder] == [320, 256, 128, 64, 32]
    assert [s.stride for s in arch.decoder] == [tuple(s) for s in reversed(kw["strides"][1:])]
    assert arch.decoder[-1].size == arch.patch_size
    assert arch.input_channels == 4
    assert arch.num_classes == 5  # from dataset.json beside the plans
    assert (arch.conv, arch.norm, arch.nonlin) == ("Conv3d", "InstanceNorm3d", "LeakyReLU")
    assert arch.mamba is None
    assert arch.warnings == ()


def test_residual_encoder_unet_blocks_per_stage() -> None:
    arch = read_architecture(RESENC)
    assert arch.kind == "ResidualEncoderUNet"
    assert [s.blocks for s in arch.encoder] == [1, 3, 4, 6, 6, 6]
    assert all(s.residual for s in arch.encoder)
    assert [s.blocks for s in arch.decoder] == [1] * 5
    assert arch.rows()[1] == {
        "stage": "encoder 1",
        "features": "64",
        "kernel": "3x3x3",
        "stride": "2x2x2",
        "blocks": "3 residual",
        "size": "64x80x56",
    }
    two_d = read_architecture(RESENC, "2d")
    assert two_d.conv == "Conv2d"
    assert two_d.patch_size == (224, 160)
    assert len(two_d.encoder[0].kernel) == 2


def test_mamba_network_inherits_and_has_its_own_bottleneck_block() -> None:
    arch = read_architecture(MAMBA, MAMBA_CONFIG)
    parent = read_architecture(MAMBA, "3d_fullres")
    assert arch.kind == "Mamba"
    assert arch.class_short == "UMambaBot2"
    assert arch.batch_size == 1  # from the child
    assert parent.batch_size == 2
    assert arch.patch_size == parent.patch_size  # inherited
    mamba = arch.mamba
    assert mamba is not None
    assert mamba.features == 320
    assert mamba.size == arch.encoder[-1].size
    row = next(r for r in arch.rows() if r["stage"] == "Mamba bottleneck")
    assert row["blocks"] == f"LayerNorm + Mamba2, {math.prod(mamba.size)} tokens"
    parts = [s.part for s in arch.stages]
    assert parts.index("mamba") == parts.index("bottleneck") + 1


@pytest.mark.parametrize(("layout", "tokens", "stages"), [("planner", 4 * 5 * 7, 6), ("stsr2025", 5 * 4 * 4, 7)])
def test_umamba2_plans_edit_is_drawn_from_the_plans(
    run_cli, tmp_path: Path, layout: str, tokens: int, stages: int
) -> None:
    """The configuration `segkit data plan --backend umamba2` adds, through `describe` and the command."""
    from segkit.backends.umamba2.plans import CONFIGURATION, add_umamba2_configuration

    path = tmp_path / "nnUNetResEncUNetMPlans.json"
    path.write_text(json.dumps(add_umamba2_configuration(_plans(RESENC), layout=layout)))
    shutil.copy(PLANS / "dataset.json", tmp_path / "dataset.json")
    arch = read_architecture(path, CONFIGURATION)
    assert (arch.kind, arch.network_class) == ("Mamba", "segkit.backends.umamba2.network.UMambaBot2")
    assert len(arch.encoder) == stages
    assert arch.mamba is not None
    assert math.prod(arch.mamba.size) == tokens
    assert arch.mamba.features == 320
    out = tmp_path / "arch.png"
    result = run_cli("viz", "arch", path, "-C", CONFIGURATION, "-o", out)
    assert result.code == 0, result.err
    assert f"Mamba2, {tokens}" in " ".join(result.out.split())  # the table may wrap the cell
    assert (iio.imread(out)[..., :3] == MAMBA_ORANGE).all(axis=-1).sum() > 500


# --- inheritance and unusual plans ------------------------------------------------------------------


def test_inheritance_is_a_shallow_update_along_the_chain() -> None:
    plans = {
        "configurations": {
            "a": {"patch_size": [8, 8, 8], "batch_size": 2, "architecture": {"x": 1}},
            "b": {"inherits_from": "a", "batch_size": 1},
            "c": {"inherits_from": "b", "architecture": {"y": 2}},
        }
    }
    c = resolve_configuration(plans, "c")
    assert c == {"patch_size": [8, 8, 8], "batch_size": 1, "architecture": {"y": 2}}  # no deep merge
    plans["configurations"]["a"]["inherits_from"] = "c"
    with pytest.raises(ConfigError, match="circle: c -> b -> a -> c"):
        resolve_configuration(plans, "c")
    plans["configurations"]["a"]["inherits_from"] = "zz"
    with pytest.raises(ConfigError, match="parent configuration 'zz' of 'c'"):
        resolve_configuration(plans, "c")


def test_unknown_class_is_drawn_generically_with_a_warning() -> None:
    plans = copy.deepcopy(_plans(PLAIN))
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "my.nets.FancyNet"
    arch = describe(plans, "3d_fullres")
    assert arch.kind == "generic"
    assert "unknown network class my.nets.FancyNet" in arch.warnings[0]
    assert len(arch.encoder) == 6


def test_legacy_plans_format() -> None:
    plans = {
        "configurations": {
            "3d_fullres": {
                "patch_size": [64, 64, 64],
                "UNet_class_name": "PlainConvUNet",
                "UNet_base_num_features": 32,
                "unet_max_num_features": 320,
                "conv_kernel_sizes": [[3, 3, 3]] * 5,
                "pool_op_kernel_sizes": [[1, 1, 1]] + [[2, 2, 2]] * 4,
                "n_conv_per_stage_encoder": [2] * 5,
                "n_conv_per_stage_decoder": [2] * 4,
            }
        }
    }
    arch = describe(plans, "3d_fullres")
    assert [s.features for s in arch.encoder] == [32, 64, 128, 256, 320]
    assert arch.encoder[-1].size == (4, 4, 4)


def test_malformed_architecture_is_a_data_error() -> None:
    plans = copy.deepcopy(_plans(PLAIN))
    del plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"]
    with pytest.raises(DataError, match="lacks a readable 'strides'"):
        describe(plans, "3d_fullres")
    plans["configurations"]["3d_fullres"].pop("architecture")
    with pytest.raises(DataError, match="no architecture description"):
        describe(plans, "3d_fullres")


def test_unreadable_plans(tmp_path: Path) -> None:
    bad = tmp_path / "plans.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=f"{bad}: not valid JSON"):
        load_plans(bad)
    bad.write_text('{"foo": 1}')
    with pytest.raises(DataError, match="not an nnU-Net plans file"):
        load_plans(bad)


# --- finding plans ---------------------------------------------------------------------------------


@pytest.fixture
def nnunet_tree(tmp_path: Path) -> dict[str, Path]:
    """nnUNet_preprocessed/Dataset501_X/{nnUNetPlans,nnUNetResEncUNetMPlans}.json and a results folder."""
    pre = tmp_path / "pre" / "Dataset501_BraTSPostTx"
    pre.mkdir(parents=True)
    for path in (PLAIN, RESENC, PLANS / "dataset.json"):
        shutil.copy(path, pre / path.name)
    results = tmp_path / "results" / "Dataset501_BraTSPostTx"
    for name in (
        "nnUNetTrainer__nnUNetPlans__2d",
        "MyTrainer__nnUNetPlans__3d_fullres",
        "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres",
    ):
        (results / name).mkdir(parents=True)
        shutil.copy(RESENC if "ResEnc" in name else PLAIN, results / name / "plans.json")
    return {"pre": tmp_path / "pre", "results": tmp_path / "results", "dataset_pre": pre, "dataset_res": results}


def test_locate_plans_from_files_folders_and_dataset_hints(nnunet_tree: dict[str, Path]) -> None:
    roots = [nnunet_tree["results"], nnunet_tree["pre"]]
    trained = nnunet_tree["dataset_res"] / "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres" / "plans.json"
    assert locate_plans(PLAIN).path == PLAIN
    assert locate_plans(trained.parent).path == trained
    # a results dataset folder: the configuration's model with the default trainer wins
    assert locate_plans(nnunet_tree["dataset_res"]).path == trained
    assert locate_plans(nnunet_tree["dataset_res"], configuration="2d").path.parent.name.endswith("__2d")
    # a preprocessed dataset folder: nnUNetPlans.json first
    assert locate_plans(nnunet_tree["dataset_pre"]).path.name == "nnUNetPlans.json"
    for hint in ("501", "Dataset501", "Dataset501_BraTSPostTx"):
        found = locate_plans(hint, search_roots=roots)
        assert found.path == trained  # results before preprocessed
        assert len(found.alternatives) == 4
    only_pre = locate_plans("501", search_roots=[nnunet_tree["pre"]])
    assert only_pre.path.name == "nnUNetPlans.json"
    by_name = locate_plans("nnUNetResEncUNetMPlans", search_roots=[nnunet_tree["pre"]])
    assert by_name.path == nnunet_tree["dataset_pre"] / "nnUNetResEncUNetMPlans.json"


def test_locate_plans_failure_lists_what_exists(nnunet_tree: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="datasets there: Dataset501_BraTSPostTx"):
        locate_plans("502", search_roots=[nnunet_tree["results"], nnunet_tree["pre"]])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no plans file here"):
        locate_plans(tmp_path / "empty")


# --- the command -----------------------------------------------------------------------------------


def test_cli_table_and_figures(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "figs" / "mamba.png"
    result = run_cli(
        "viz",
        "arch",
        MAMBA,
        "-C",
        MAMBA_CONFIG,
        "-o",
        out,
        "--vector-output",
        tmp_path / "figs" / "mamba.svg",
        "--detailed-vector-output",
        tmp_path / "figs" / "mamba_detailed.pdf",
    )
    assert result.code == 0, result.err
    for column in ("stage", "features", "kernel", "stride", "blocks", "feature map"):
        assert column in result.out
    assert "Mamba bottleneck" in result.out
    assert "bottleneck 5" in result.out
    detailed = tmp_path / "figs" / "mamba_detailed.png"
    assert out.read_bytes().startswith(b"\x89PNG")
    assert detailed.read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "figs" / "mamba.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "figs" / "mamba_detailed.pdf").read_bytes().startswith(b"%PDF")
    overview = iio.imread(out)[..., :3]
    assert (overview == MAMBA_ORANGE).all(axis=-1).sum() > 500  # the Mamba block is drawn
    plain = tmp_path / "plain.png"
    assert run_cli("viz", "arch", PLAIN, "-o", plain).code == 0
    assert (iio.imread(plain)[..., :3] == MAMBA_ORANGE).all(axis=-1).sum() == 0


def test_cli_json_and_default_outputs(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("viz", "arch", RESENC, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["kind"] == "ResidualEncoderUNet"
    assert data["outputs"] == {
        "overview": "outputs/figures/architecture/nnUNetResEncUNetMPlans_3d_fullres_overview.png",
        "detailed": "outputs/figures/architecture/nnUNetResEncUNetMPlans_3d_fullres_overview_detailed.png",
    }
    assert len(data["stages"]) == 11
    again = run_cli("viz", "arch", RESENC)
    assert again.code == 1
    assert "--overwrite" in again.err
    assert run_cli("viz", "arch", RESENC, "--overwrite").code == 0


def test_cli_dataset_id_uses_the_configured_nnunet_folders(run_cli, nnunet_tree, tmp_path: Path) -> None:
    result = run_cli(
        "viz",
        "arch",
        "501",
        "--nnunet-preprocessed",
        nnunet_tree["pre"],
        "--nnunet-results",
        tmp_path / "none",
        "-o",
        tmp_path / "x.png",
        "--json",
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["plans"] == str(nnunet_tree["dataset_pre"] / "nnUNetPlans.json")


def test_plans_path_in_a_run_config_is_relative_to_the_yaml(run_cli, tmp_path: Path, monkeypatch) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(RESENC, configs / "plans.json")
    (configs / "arch.yaml").write_text("viz:\n  arch:\n    plans: plans.json\n    output: arch.png\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run_cli("viz", "arch", "--config", configs / "arch.yaml", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["plans"] == str(configs / "plans.json")
    assert (configs / "arch.png").is_file()
    # a dataset id is not a path and stays as written
    (configs / "id.yaml").write_text("viz:\n  arch:\n    plans: '501'\n")
    assert "no plans found for '501'" in run_cli("viz", "arch", "--config", configs / "id.yaml").err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-C", "3d_lowres"], 2, "no configuration '3d_lowres'; the plans have 2d, 3d_fullres"),
        (["--vector-output", "x.png"], 2, "unsupported vector figure format .png; use .svg, .pdf"),
        (["-o", "x.gif"], 2, "unsupported figure format .gif"),
    ],
)
def test_cli_errors_are_one_line(run_cli, tmp_path: Path, monkeypatch, args, code, message) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("viz", "arch", PLAIN, *args)
    assert result.code == code
    assert message in result.err
    assert len([line for line in result.err.splitlines() if line.strip()]) == 1


def test_cli_seed_config_flag_is_a_one_line_error_with_a_hint(run_cli, tmp_path: Path, monkeypatch) -> None:
    # The old script took `--config 3d_fullres`; in segkit --config is the run config (YAML).
    monkeypatch.chdir(tmp_path)
    result = run_cli("viz", "arch", PLAIN, "--config", "3d_fullres")
    assert result.code == 2
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines == [
        "error: 3d_fullres: run config not found (--config)",
        "hint: the plans configuration is -C/--configuration (--config is a run-config YAML)",
    ]
    missing_yaml = run_cli("viz", "arch", PLAIN, "-c", "run.yaml")
    assert missing_yaml.code == 2
    assert missing_yaml.err.strip() == "error: run.yaml: run config not found (--config)"  # no hint: a YAML name
    (tmp_path / "folder.yaml").mkdir()
    folder = run_cli("eval", "gt", "pred", "--config", "folder.yaml")  # the same check on every command
    assert folder.code == 2
    assert folder.err.strip() == "error: folder.yaml: --config needs a run-config YAML file, not a folder"
    (tmp_path / "run.yaml").write_text("viz:\n  arch:\n    dpi: 40\n")
    ok = run_cli("viz", "arch", PLAIN, "-c", "run.yaml", "-o", tmp_path / "x.png")
    assert ok.code == 0, ok.err


def test_cli_unreadable_plans(run_cli, tmp_path: Path) -> None:
    bad = tmp_path / "plans.json"
    bad.write_text("[]")
    result = run_cli("viz", "arch", bad, "-o", tmp_path / "x.png")
    assert result.code == 1
    assert result.err.startswith(f"error: {bad}: not an nnU-Net plans file")


# --- live planning ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_live_nnunet_planning_then_arch(tmp_path: Path, run_cli) -> None:
    """Plan a synthetic dataset with nnU-Net's default and ResEnc-M planners, then draw both networks."""
    from segkit.data.synth import write_cohort

    write_cohort(tmp_path / "training_data", cases=5, shape=(32, 32, 32), seed=3)
    (tmp_path / "validation_data").mkdir()
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    prepared = run_cli(
        "data",
        "prepare",
        "--train-sources",
        tmp_path / "training_data",
        "--test-sources",
        tmp_path / "validation_data",
        "--nnunet-raw",
        raw,
        "--workers",
        "1",
    )
    assert prepared.code == 0, prepared.err
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(pre),
        "nnUNet_results": str(tmp_path / "results"),
        "nnUNet_def_n_proc": "1",
    }
    bin_dir = Path(sys.executable).parent
    for cmd in (
        [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", "501", "--no_pp", "-npfp", "1"],
        [str(bin_dir / "nnUNetv2_plan_experiment"), "-d", "501", "-pl", "nnUNetPlannerResEncM"],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    dataset = pre / "Dataset501_BraTSPostTx"
    for plans_file, kind in (
        ("nnUNetPlans.json", "PlainConvUNet"),
        ("nnUNetResEncUNetMPlans.json", "ResidualEncoderUNet"),
    ):
        result = run_cli(
            "viz",
            "arch",
            plans_file.removesuffix(".json"),
            "--nnunet-preprocessed",
            pre,
            "--nnunet-results",
            tmp_path / "results",
            "-o",
            tmp_path / f"{kind}.png",
            "--json",
        )
        assert result.code == 0, result.err
        data = json.loads(result.out)
        assert data["plans"] == str(dataset / plans_file)
        assert data["kind"] == kind
        planned = json.loads((dataset / plans_file).read_text())["configurations"]["3d_fullres"]
        n_stages = planned["architecture"]["arch_kwargs"]["n_stages"]
        assert len(data["stages"]) == 2 * n_stages - 1
        assert data["patch_size"] == planned["patch_size"]
        assert (tmp_path / f"{kind}_detailed.png").is_file()
