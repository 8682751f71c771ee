"""UMambaBot2: built by nnU-Net from plans, sizes of the seed's configuration, forward/backward, init."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from segkit.backends.umamba2.network import UMambaBot2  # noqa: E402
from segkit.errors import ConfigError  # noqa: E402

NAME = "segkit.backends.umamba2.network.UMambaBot2"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]

# The architecture block of the seed's plans edit (3d_fullres_torchres_mambabot2_ps160x256x256_bs1).
SEED_ARCH = {
    "n_stages": 7,
    "features_per_stage": [32, 64, 128, 256, 320, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 7,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
    "n_blocks_per_stage": [1, 3, 4, 6, 6, 6, 6],
    "n_conv_per_stage_decoder": [1, 1, 1, 1, 1, 1],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 0.00001, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}

# A tiny 3-stage 3D variant for CPU tests: bottleneck 16 channels, mixer d_inner 32 = 4 heads of 8.
TINY_ARCH = {
    **SEED_ARCH,
    "n_stages": 3,
    "features_per_stage": [4, 8, 16],
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_blocks_per_stage": [1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1],
    "headdim": 8,
    "d_state": 4,
    "mamba_kernel": "torch",
}


def _from_plans(arch: dict, *, deep_supervision: bool = True, channels: int = 4, classes: int = 3, init: bool = True):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans(
        NAME,
        copy.deepcopy(arch),
        REQUIRES_IMPORT,
        channels,
        classes,
        allow_init=init,
        deep_supervision=deep_supervision,
    )


def test_nnunet_trainer_builds_it_from_an_inheriting_plans_configuration() -> None:
    """The seed's way: a configuration inheriting 3d_fullres with a whole `architecture` block naming us."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    resenc = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    mamba_arch = {k: v for k, v in TINY_ARCH.items() if k != "mamba_kernel"}
    resenc_arch = {k: v for k, v in mamba_arch.items() if k not in ("headdim", "d_state")}
    plans = {
        "configurations": {
            "3d_fullres": {
                "patch_size": [16, 16, 16],
                "batch_size": 2,
                "architecture": {
                    "network_class_name": resenc,
                    "arch_kwargs": resenc_arch,
                    "_kw_requires_import": REQUIRES_IMPORT,
                },
            },
            "3d_fullres_umamba2": {
                "inherits_from": "3d_fullres",
                "batch_size": 1,
                "architecture": {
                    "network_class_name": NAME,
                    "arch_kwargs": mamba_arch,
                    "_kw_requires_import": REQUIRES_IMPORT,
                },
            },
        }
    }
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres_umamba2")
    assert config.patch_size == [16, 16, 16]  # inherited
    net = nnUNetTrainer.build_network_architecture(manager, config, 4, 3, enable_deep_supervision=True)
    assert isinstance(net, UMambaBot2)
    assert net.mamba_layer.mamba.headdim == 8
    assert len(net(torch.randn(1, 4, 16, 16, 16))) == 2
    plain = nnUNetTrainer.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 4, 3)
    assert not hasattr(plain, "mamba_layer")


def test_seed_configuration_has_142_1_m_parameters_and_0_642_m_in_mamba() -> None:
    with torch.device("meta"):
        net = _from_plans(SEED_ARCH, channels=1, classes=2, init=False)
    assert isinstance(net, UMambaBot2)
    total = sum(p.numel() for p in net.parameters())
    mamba = sum(p.numel() for p in net.mamba_layer.parameters())
    assert round(total / 1e6, 1) == 142.1
    assert round(mamba / 1e6, 3) == 0.642
    assert mamba == 642_264  # LayerNorm(320) + Mamba2Simple(320, d_state 32, expand 2, headdim 80)
    keys = [k for k in net.state_dict() if k.startswith("mamba_layer.")]
    assert keys == [
        "mamba_layer.norm.weight",
        "mamba_layer.norm.bias",
        "mamba_layer.mamba.dt_bias",
        "mamba_layer.mamba.A_log",
        "mamba_layer.mamba.D",
        "mamba_layer.mamba.in_proj.weight",
        "mamba_layer.mamba.conv1d.weight",
        "mamba_layer.mamba.conv1d.bias",
        "mamba_layer.mamba.norm.weight",
        "mamba_layer.mamba.out_proj.weight",
    ]


def test_mixer_keywords_come_from_arch_kwargs() -> None:
    arch = {**TINY_ARCH, "d_state": 6, "d_conv": 3, "expand": 4, "headdim": 16, "ngroups": 2, "chunk_size": 5}
    arch["torch_chunk_size"] = 7
    net = _from_plans(arch)
    mixer = net.mamba_layer.mamba
    assert (mixer.d_state, mixer.d_conv, mixer.d_inner, mixer.nheads, mixer.ngroups, mixer.chunk_size) == (
        6,
        3,
        64,
        4,
        2,
        5,
    )
    assert (mixer.torch_chunk_size, mixer.kernel) == (7, "torch")


def test_defaults_are_u_mamba2s() -> None:
    resenc_only = {k: v for k, v in TINY_ARCH.items() if k not in ("headdim", "d_state", "mamba_kernel")}
    # Bottleneck of 40 channels: d_inner 80 is one head of the default headdim 80.
    net = _from_plans({**resenc_only, "features_per_stage": [4, 8, 40]}, init=False)
    mixer = net.mamba_layer.mamba
    assert (mixer.d_state, mixer.d_conv, mixer.expand, mixer.headdim, mixer.ngroups) == (32, 4, 2, 80, 1)
    assert (mixer.chunk_size, mixer.torch_chunk_size, mixer.kernel) == (256, 64, "auto")


def test_forward_backward_with_deep_supervision() -> None:
    torch.manual_seed(0)
    net = _from_plans(TINY_ARCH)
    x = torch.randn(2, 4, 16, 16, 12)
    outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(2, 3, 16, 16, 12), (2, 3, 8, 8, 6)]
    sum(o.square().mean() for o in outs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
    assert net.mamba_layer.mamba.in_proj.weight.grad.abs().sum() > 0
    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled toggles
    assert tuple(net(x).shape) == (2, 3, 16, 16, 12)


def test_bottleneck_goes_through_the_mamba_layer_in_c_order() -> None:
    torch.manual_seed(0)
    net = _from_plans(TINY_ARCH, deep_supervision=False).eval()
    x = torch.randn(1, 4, 8, 8, 8)
    seen: dict[str, torch.Tensor] = {}

    def keep_input(_module: torch.nn.Module, inputs: tuple[torch.Tensor], _output: torch.Tensor) -> None:
        seen["tokens"] = inputs[0]  # returns None: a hook's return value would replace the output

    net.mamba_layer.mamba.register_forward_hook(keep_input)
    with torch.no_grad():
        out = net(x)
        bottleneck = net.encoder(x)[-1]  # (1, 16, 2, 2, 2)
        # C order: token i is voxel i of the row-major flattening of (D, H, W).
        expected = net.mamba_layer.norm(bottleneck.reshape(1, 16, 8).transpose(1, 2))
        torch.testing.assert_close(seen["tokens"], expected)
        # Changing the Mamba layer changes the output: it is on the path to the decoder.
        net.mamba_layer.mamba.out_proj.weight.mul_(2)
        assert not torch.allclose(net(x), out)


def test_two_dimensional_configuration() -> None:
    arch = {
        **TINY_ARCH,
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "kernel_sizes": [[3, 3]] * 3,
        "strides": [[1, 1], [2, 2], [2, 2]],
    }
    out = _from_plans(arch, deep_supervision=False)(torch.randn(1, 4, 16, 20))
    assert tuple(out.shape) == (1, 3, 16, 20)


def test_initialize_is_he_for_convolutions_and_leaves_the_mixer_alone() -> None:
    torch.manual_seed(0)
    net = _from_plans(TINY_ARCH, init=False)
    mixer_before = {k: v.clone() for k, v in net.mamba_layer.state_dict().items()}
    conv = net.encoder.stem.convs[0].conv
    conv_before = conv.weight.clone()
    torch.nn.init.constant_(conv.bias, 1.0)
    net.apply(net.initialize)  # what get_network_from_plans does with allow_init
    assert not torch.equal(conv.weight, conv_before)
    assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    for k, v in net.mamba_layer.state_dict().items():
        assert torch.equal(v, mixer_before[k]), k


def test_bad_mixer_sizes_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"d_model\*expand \(16\*2 = 32\) is not a multiple of headdim 80"):
        _from_plans({**TINY_ARCH, "headdim": 80})


def test_state_dict_round_trip_through_plans() -> None:
    a = _from_plans(TINY_ARCH)
    b = _from_plans(TINY_ARCH)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 4, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x)[0], b.eval()(x)[0], rtol=0, atol=0)


@pytest.mark.gpu
def test_amp_training_step_on_cuda_is_finite() -> None:
    torch.manual_seed(0)
    # Five stages ending at the seed's 320 bottleneck channels (so the mixer is U-Mamba2's), small enough for
    # any GPU: 64^3 patches give a 4x4x4 bottleneck, 64 tokens.
    arch = {
        **SEED_ARCH,
        "n_stages": 5,
        "features_per_stage": [16, 32, 64, 128, 320],
        "kernel_sizes": [[3, 3, 3]] * 5,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_blocks_per_stage": [1, 2, 2, 2, 2],
        "n_conv_per_stage_decoder": [1, 1, 1, 1],
        "mamba_kernel": "auto",
    }
    net = _from_plans(arch, channels=1, classes=3).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(2, 1, 64, 64, 64, device="cuda")
    target = torch.randint(0, 3, (2, 64, 64, 64), device="cuda")
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            outs = net(x)
            loss = torch.nn.functional.cross_entropy(outs[0], target)
        assert outs[0].dtype == torch.float16
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(opt)
        scaler.update()
        assert torch.isfinite(loss)
    grads = [p.grad for p in net.mamba_layer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(torch.isfinite(p).all() for p in net.parameters())
