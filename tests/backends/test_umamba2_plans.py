"""The UMamba2 plans edit: layouts, overrides, normalisation, checks, and nnU-Net building the network from it.

The residual-encoder plans are real nnU-Net 2.8.1 planner output (``tests/viz/plans``, see its README): the
ResEnc-M planner on the BraTS grid; the default planner's plans (a PlainConvUNet) for the refusal.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from segkit.backends.umamba2.plans import (
    CONFIGURATION,
    LAYOUTS,
    NETWORK_CLASS,
    NORMALIZATIONS,
    STSR2025_ARCH,
    add_umamba2_configuration,
    bottleneck_tokens,
    check_umamba2_configuration,
)
from segkit.errors import ConfigError, DataError

FIXTURES = Path(__file__).parents[1] / "viz" / "plans"
MIXER = {"d_state": 32, "d_conv": 4, "expand": 2, "headdim": 80}


@pytest.fixture
def resenc() -> dict:
    return json.loads((FIXTURES / "nnUNetResEncUNetMPlans.json").read_text())


@pytest.fixture
def plain() -> dict:
    return json.loads((FIXTURES / "nnUNetPlans.json").read_text())


def _config(plans: dict) -> dict:
    return plans["configurations"][CONFIGURATION]


def _resolved(plans: dict) -> dict:
    """The configuration as nnU-Net resolves it (its own PlansManager)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return PlansManager(plans).get_configuration(CONFIGURATION).configuration


# --- layout "planner" ------------------------------------------------------------------------------


def test_planner_layout_is_the_planners_resenc_with_a_mamba_bottleneck(resenc: dict) -> None:
    before = copy.deepcopy(resenc)
    plans = add_umamba2_configuration(resenc)
    assert resenc == before  # the input is not modified
    parent = resenc["configurations"]["3d_fullres"]
    config = _config(plans)
    # Only what differs is stored; the architecture block is whole, since nnU-Net's update is shallow.
    assert set(config) == {"inherits_from", "architecture"}
    assert config["inherits_from"] == "3d_fullres"
    arch = config["architecture"]
    assert arch["network_class_name"] == NETWORK_CLASS
    assert arch["arch_kwargs"] == {**parent["architecture"]["arch_kwargs"], **MIXER}
    assert arch["_kw_requires_import"] == parent["architecture"]["_kw_requires_import"]
    resolved = _resolved(plans)
    for key in ("patch_size", "batch_size", "spacing", "data_identifier", "normalization_schemes", "batch_dice"):
        assert resolved[key] == parent[key], key
    assert resolved["architecture"]["network_class_name"] == NETWORK_CLASS
    assert {k: v for k, v in plans["configurations"].items() if k != CONFIGURATION} == resenc["configurations"]
    check_umamba2_configuration(plans, CONFIGURATION, "plans.json")


def test_default_planner_plans_are_refused_with_the_planners_to_use(plain: dict) -> None:
    with pytest.raises(ConfigError, match=r"PlainConvUNet .*plan with --planner resenc-m \(or resenc-l"):
        add_umamba2_configuration(plain)
    # the seed's layout needs no residual-encoder planner: it brings its own network
    plans = add_umamba2_configuration(plain, layout="stsr2025")
    assert _config(plans)["architecture"]["arch_kwargs"]["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6, 6]


def test_mixer_sizes_and_features_are_stored(resenc: dict) -> None:
    features = [8, 16, 32, 64, 96, 96]
    plans = add_umamba2_configuration(resenc, features_per_stage=features, d_state=16, d_conv=3, expand=4, headdim=64)
    kw = _config(plans)["architecture"]["arch_kwargs"]
    assert kw["features_per_stage"] == features
    assert (kw["d_state"], kw["d_conv"], kw["expand"], kw["headdim"]) == (16, 3, 4, 64)


@pytest.mark.parametrize("features", [[8, 16, 32], [8, 16, 32, 64, 96, 0], "32"])
def test_features_must_be_one_positive_integer_per_stage(resenc: dict, features: object) -> None:
    with pytest.raises(ConfigError, match=r"features_per_stage should be 6 positive integers"):
        add_umamba2_configuration(resenc, features_per_stage=features)  # type: ignore[arg-type]


def test_headdim_that_does_not_divide_the_inner_width_names_the_numbers(resenc: dict) -> None:
    with pytest.raises(ConfigError, match=r"d_model\*expand \(320\*2 = 640\) is not a multiple of headdim 96"):
        add_umamba2_configuration(resenc, headdim=96)
    with pytest.raises(ConfigError, match=r"d_model\*expand \(48\*2 = 96\) is not a multiple of headdim 80"):
        add_umamba2_configuration(resenc, features_per_stage=[4, 8, 16, 32, 48, 48])
    with pytest.raises(ConfigError, match=r"Mamba2 sizes should be positive integers, found d_state 0"):
        add_umamba2_configuration(resenc, d_state=0)


# --- patch and batch -------------------------------------------------------------------------------


def test_patch_and_batch_overrides(resenc: dict) -> None:
    # ResEnc-M on the BraTS grid: strides end [2, 2, 1], total stride 32x32x16
    plans = add_umamba2_configuration(resenc, patch_size=[64, 96, 48], batch_size=4)
    assert (_config(plans)["patch_size"], _config(plans)["batch_size"]) == ([64, 96, 48], 4)
    assert bottleneck_tokens(_config(plans)["architecture"]["arch_kwargs"], [64, 96, 48]) == 2 * 3 * 3
    same = add_umamba2_configuration(resenc, patch_size=[128, 160, 112], batch_size=2)
    assert "patch_size" not in _config(same)
    assert "batch_size" not in _config(same)  # equal to 3d_fullres's: inherited, not repeated


def test_patch_not_a_multiple_of_the_total_stride(resenc: dict) -> None:
    with pytest.raises(ConfigError, match=r"patch 64x100x48 is not a multiple of the network's total stride 32x32x16"):
        add_umamba2_configuration(resenc, patch_size=[64, 100, 48])


def test_patch_without_bottleneck_tokens(resenc: dict) -> None:
    with pytest.raises(ConfigError, match=r"patch 16x64x64 leaves no bottleneck tokens .* total stride is 32x32x16"):
        add_umamba2_configuration(resenc, patch_size=[16, 64, 64])


@pytest.mark.parametrize(("patch", "batch"), [([64, 64], None), ([64, 0, 64], None), (None, 0), (None, True)])
def test_malformed_patch_or_batch(resenc: dict, patch: list[int] | None, batch: int | None) -> None:
    with pytest.raises(ConfigError, match=r"(patch_size|batch_size|strides\[0\]) should be"):
        add_umamba2_configuration(resenc, patch_size=patch, batch_size=batch)


def test_bottleneck_tokens() -> None:
    assert bottleneck_tokens(STSR2025_ARCH, [160, 256, 256]) == 5 * 4 * 4
    assert bottleneck_tokens(STSR2025_ARCH, [16, 256, 256]) == 0
    assert bottleneck_tokens({"n_stages": 2, "strides": 2}, [8, 8]) == 2 * 2  # stride 2 in both stages
    with pytest.raises(ConfigError, match=r"strides\[0\] should be 2 positive integers"):
        bottleneck_tokens(STSR2025_ARCH, [160, 256])


# --- layout "stsr2025" -----------------------------------------------------------------------------


def test_stsr2025_layout_is_the_seeds_configuration(resenc: dict) -> None:
    plans = add_umamba2_configuration(resenc, layout="stsr2025")
    config = _config(plans)
    assert config["architecture"]["arch_kwargs"] == {
        "n_stages": 7,
        "features_per_stage": [32, 64, 128, 256, 320, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 7,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
        "n_blocks_per_stage": [1, 3, 4, 6, 6, 6, 6],
        "n_conv_per_stage_decoder": [1] * 6,
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
        **MIXER,
    }
    resolved = _resolved(plans)
    assert (resolved["patch_size"], resolved["batch_size"], resolved["batch_dice"]) == ([160, 256, 256], 1, False)
    assert resolved["normalization_schemes"] == ["ZScoreNormalization"] * 4  # MRI: the planner's ZScore
    assert resolved["data_identifier"] == "nnUNetPlans_3d_fullres"  # same preprocessing, shared data
    assert bottleneck_tokens(resolved["architecture"]["arch_kwargs"], resolved["patch_size"]) == 80
    # the ResEnc-M plans set batch_dice false for 3d_fullres already: nothing to repeat; others get it set
    assert "batch_dice" not in config
    parent = resenc["configurations"]["3d_fullres"]
    parent["batch_dice"] = True
    assert _config(add_umamba2_configuration(resenc, layout="stsr2025"))["batch_dice"] is False


def test_stsr2025_builds_nnunets_142_1_m_parameter_network(resenc: dict) -> None:
    torch = pytest.importorskip("torch")
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from segkit.backends.umamba2.network import UMambaBot2

    config = PlansManager(add_umamba2_configuration(resenc, layout="stsr2025")).get_configuration(CONFIGURATION)
    with torch.device("meta"):  # no memory, no init: only the sizes
        net = get_network_from_plans(
            config.network_arch_class_name,
            config.network_arch_init_kwargs,
            config.network_arch_init_kwargs_req_import,
            4,
            4,
            allow_init=False,
            deep_supervision=True,
        )
    assert isinstance(net, UMambaBot2)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 142.1
    assert sum(p.numel() for p in net.mamba_layer.parameters()) == 642_264


def test_stsr2025_with_a_patch_that_does_not_fit(resenc: dict) -> None:
    with pytest.raises(
        ConfigError, match=r"patch 112x128x128 is not a multiple .* total stride 32x64x64 .*\(e.g. 128x128x128\)"
    ):
        add_umamba2_configuration(resenc, layout="stsr2025", patch_size=[112, 128, 128])
    with pytest.raises(ConfigError, match=r"patch 32x32x32 leaves no bottleneck tokens"):
        add_umamba2_configuration(resenc, layout="stsr2025", patch_size=[32, 32, 32])
    plans = add_umamba2_configuration(resenc, layout="stsr2025", patch_size=[64, 128, 192], batch_size=3)
    assert (_config(plans)["patch_size"], _config(plans)["batch_size"]) == ([64, 128, 192], 3)


def test_unknown_layout(resenc: dict) -> None:
    with pytest.raises(ConfigError, match=r"unknown UMamba2 layout 'stsr'; choose one of planner, stsr2025"):
        add_umamba2_configuration(resenc, layout="stsr")
    assert LAYOUTS == ("planner", "stsr2025")


# --- normalisation ---------------------------------------------------------------------------------


def test_zscore_on_mri_shares_the_3d_fullres_data(resenc: dict) -> None:
    plans = add_umamba2_configuration(resenc, normalization="zscore")
    assert set(_config(plans)) == {"inherits_from", "architecture"}
    assert _resolved(plans)["data_identifier"] == "nnUNetPlans_3d_fullres"


def test_ct_normalization_gets_its_own_preprocessed_data(resenc: dict) -> None:
    plans = add_umamba2_configuration(resenc, normalization="ct")
    config = _config(plans)
    assert config["normalization_schemes"] == ["CTNormalization"] * 4
    # nnU-Net's planner masks only ZScore (the other schemes would not leave the background at zero)
    assert config["use_mask_for_norm"] == [False] * 4
    assert config["data_identifier"] == "nnUNetResEncUNetMPlans_3d_fullres_umamba2"
    named = add_umamba2_configuration(resenc, normalization="none", plans_identifier="nnUNetResEncUNetMPlans_x")
    assert _config(named)["data_identifier"] == "nnUNetResEncUNetMPlans_x_3d_fullres_umamba2"
    assert _config(named)["normalization_schemes"] == ["NoNormalization"] * 4
    # back to ZScore from CT plans: the mask decision read from a ZScore channel, or none when there is none
    ct_parent = copy.deepcopy(resenc)
    ct_parent["configurations"]["3d_fullres"]["normalization_schemes"] = ["CTNormalization"] * 4
    ct_parent["configurations"]["3d_fullres"]["use_mask_for_norm"] = [False] * 4
    back = _config(add_umamba2_configuration(ct_parent, normalization="zscore"))
    assert (back["normalization_schemes"], back["use_mask_for_norm"]) == (["ZScoreNormalization"] * 4, [False] * 4)


def test_normalization_scheme_names_are_nnunets() -> None:
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    for name in NORMALIZATIONS.values():
        assert isinstance(getattr(schemes, name), type), name


def test_unknown_normalization_lists_the_choices(resenc: dict) -> None:
    with pytest.raises(ConfigError, match=r"unknown normalization 'CT'; choose one of zscore, ct, none, rescale01"):
        add_umamba2_configuration(resenc, normalization="CT")


def test_ct_normalization_needs_intensity_properties(resenc: dict) -> None:
    del resenc["foreground_intensity_properties_per_channel"]
    with pytest.raises(ConfigError, match=r"CT normalisation needs .*foreground_intensity_properties_per_channel"):
        add_umamba2_configuration(resenc, normalization="ct")


# --- re-planning -----------------------------------------------------------------------------------


def test_applying_it_again_replaces_the_configuration(resenc: dict) -> None:
    once = add_umamba2_configuration(resenc, normalization="ct", batch_size=3)
    assert add_umamba2_configuration(once, normalization="ct", batch_size=3) == once
    # nnU-Net's re-planning keeps unknown configurations of the old plans; a new edit replaces ours whole
    changed = add_umamba2_configuration(once, layout="stsr2025")
    assert changed == add_umamba2_configuration(resenc, layout="stsr2025")
    assert "data_identifier" not in _config(changed)


def test_plans_without_3d_fullres(resenc: dict) -> None:
    del resenc["configurations"]["3d_fullres"]
    with pytest.raises(ConfigError, match=r"no 3d_fullres configuration to inherit from \(they have 2d\)"):
        add_umamba2_configuration(resenc)


# --- checks before training and inference ----------------------------------------------------------


def test_check_missing_configuration_is_a_data_error_with_the_plan_hint(resenc: dict) -> None:
    with pytest.raises(DataError, match=r"^p/plans.json: plans have no 3d_fullres_umamba2 configuration") as err:
        check_umamba2_configuration(resenc, CONFIGURATION, "p/plans.json")
    assert err.value.hint == "run `segkit data plan --backend umamba2`"
    with pytest.raises(DataError, match=r"3d_fullres is not a UMambaBot2 network .*ResidualEncoderUNet") as err:
        check_umamba2_configuration(resenc, "3d_fullres", "p/plans.json")
    assert "segkit data plan --backend umamba2" in str(err.value.hint)


def test_check_finds_structural_problems_of_hand_edited_plans(resenc: dict) -> None:
    plans = add_umamba2_configuration(resenc, layout="stsr2025")
    check_umamba2_configuration(plans, CONFIGURATION, "plans.json")
    cases = [
        ("patch_size", [160, 256, 250], r"patch 160x256x250 is not a multiple"),
        ("batch_size", 0, r"batch_size should be a positive integer"),
        ("headdim", 96, r"Mamba2 d_model\*expand \(320\*2 = 640\) is not a multiple of headdim 96"),
        ("ngroups", 3, r"Mamba2 ngroups 3 does not divide the 8 heads"),
        ("n_blocks_per_stage", [1, 3, 4], r"arch_kwargs.n_blocks_per_stage should have 7 entries"),
        ("n_conv_per_stage_decoder", [1] * 7, r"arch_kwargs.n_conv_per_stage_decoder should have 6 entries"),
    ]
    for key, value, message in cases:
        broken = copy.deepcopy(plans)
        config = _config(broken)
        target = config if key in ("patch_size", "batch_size") else config["architecture"]["arch_kwargs"]
        target[key] = value
        with pytest.raises(ConfigError, match=rf"^plans.json: configuration 3d_fullres_umamba2: {message}"):
            check_umamba2_configuration(broken, CONFIGURATION, "plans.json")


# --- nnU-Net builds it -----------------------------------------------------------------------------


def test_nnunet_builds_and_runs_segkits_network_from_the_edited_plans(resenc: dict) -> None:
    """The real plans, a tiny network: nnU-Net's trainer finds UMambaBot2 by its dotted name."""
    torch = pytest.importorskip("torch")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from segkit.backends.umamba2.network import UMambaBot2

    plans = add_umamba2_configuration(
        resenc, patch_size=[32, 32, 32], batch_size=1, features_per_stage=[2, 4, 4, 8, 8, 16], d_state=4, headdim=8
    )
    manager = PlansManager(plans)
    config = manager.get_configuration(CONFIGURATION)
    assert config.patch_size == [32, 32, 32]
    torch.manual_seed(0)
    net = nnUNetTrainer.build_network_architecture(manager, config, 4, 3, enable_deep_supervision=True)
    assert isinstance(net, UMambaBot2)
    assert (net.mamba_layer.mamba.d_state, net.mamba_layer.mamba.headdim) == (4, 8)
    with torch.no_grad():
        outs = net(torch.randn(1, 4, 32, 32, 32))
    assert [tuple(o.shape) for o in outs][:2] == [(1, 3, 32, 32, 32), (1, 3, 16, 16, 16)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_module_imports_neither_torch_nor_nnunet() -> None:
    code = (
        "import sys, segkit.backends.umamba2.plans\n"
        "heavy = [m for m in ('torch', 'nnunetv2', 'dynamic_network_architectures') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_nnunet_preprocesses_and_replanning_keeps_the_configuration(tmp_path: Path, run_cli) -> None:
    """Real planning of a tiny cohort: nnU-Net preprocesses the edited configuration into its own data
    (CT normalisation), and re-planning keeps it, so applying the edit again changes nothing."""
    import os

    from segkit.data.synth import write_cohort

    write_cohort(tmp_path / "training_data", cases=3, shape=(24, 24, 24), seed=5)
    (tmp_path / "test_data").mkdir()
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    prepared = run_cli(
        "data", "prepare", "--train-sources", tmp_path / "training_data", "--test-sources", tmp_path / "test_data",
        "--nnunet-raw", raw, "--workers", "1",
    )  # fmt: skip
    assert prepared.code == 0, prepared.err
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(pre), "nnUNet_def_n_proc": "1"}
    env["nnUNet_results"] = str(tmp_path / "results")
    bin_dir = Path(sys.executable).parent

    def nnunet(*args: str) -> None:
        proc = subprocess.run([str(bin_dir / args[0]), *args[1:]], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    nnunet("nnUNetv2_plan_and_preprocess", "-d", "501", "-pl", "nnUNetPlannerResEncM", "--no_pp", "-npfp", "1")
    path = pre / "Dataset501_BraTSPostTx" / "nnUNetResEncUNetMPlans.json"
    planned = json.loads(path.read_text())
    kw = planned["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    features = [min(4 * 2**i, 16) for i in range(kw["n_stages"])]
    options = {"normalization": "ct", "features_per_stage": features, "d_state": 4, "headdim": 8}
    edited = add_umamba2_configuration(planned, **options)
    path.write_text(json.dumps(edited, indent=4))
    check_umamba2_configuration(json.loads(path.read_text()), CONFIGURATION, str(path))

    nnunet("nnUNetv2_preprocess", "-d", "501", "-plans_name", "nnUNetResEncUNetMPlans", "-c", CONFIGURATION, "-np", "1")
    data = pre / "Dataset501_BraTSPostTx" / "nnUNetResEncUNetMPlans_3d_fullres_umamba2"
    cases = sorted(p.name for p in data.iterdir() if p.suffix == ".b2nd" and not p.name.endswith("_seg.b2nd"))
    assert len(cases) == 3, sorted(p.name for p in data.iterdir())
    assert not (pre / "Dataset501_BraTSPostTx" / "nnUNetPlans_3d_fullres").exists()  # only ours was preprocessed

    nnunet("nnUNetv2_plan_experiment", "-d", "501", "-pl", "nnUNetPlannerResEncM")
    replanned = json.loads(path.read_text())
    assert replanned["configurations"][CONFIGURATION] == edited["configurations"][CONFIGURATION]
    assert add_umamba2_configuration(replanned, **options) == replanned
