"""load_pretrained / apply_pretrained: full checkpoints with and without heads, partial ones, prefixes and
the errors (nothing fits, another architecture, unreadable), on tiny networks."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from _umamba2 import (  # noqa: E402
    nnunet_folders,
    save_nnunet_checkpoint,
    tiny_network,
    tiny_trainer,
)
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from segkit.backends.umamba2.pretrained import (  # noqa: E402
    PretrainedReport,
    apply_pretrained,
    load_pretrained,
    read_weights,
)
from segkit.errors import BackendError  # noqa: E402


def _distinct(net: torch.nn.Module) -> int:
    return len(list(net.parameters())) + len(list(net.buffers()))  # both de-duplicate shared tensors


def _head_names(net: torch.nn.Module) -> list[str]:
    return [n for n, _ in net.named_parameters() if ".seg_layers." in n]


def _same(a: torch.nn.Module, b: torch.nn.Module, name: str) -> bool:
    return torch.equal(a.get_parameter(name), b.get_parameter(name))


@pytest.fixture
def nnunet_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, torch.nn.Module]:
    """A checkpoint written by nnU-Net's own trainer (UMambaBot2 from plans) and that trainer's network."""
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(nnUNetTrainer)
    with torch.no_grad():  # "trained": unlike any freshly initialised tiny network, whatever its seed
        for p in trainer.network.parameters():
            p.add_(torch.randn_like(p))
    return save_nnunet_checkpoint(trainer, tmp_path / "checkpoint_final.pth"), trainer.network


def test_nnunet_checkpoint_needs_the_numpy_allowlist_and_nothing_more(
    nnunet_checkpoint: tuple[Path, torch.nn.Module],
) -> None:
    path, _ = nnunet_checkpoint
    with pytest.raises(Exception, match="numpy"):
        torch.load(path, map_location="cpu", weights_only=True)  # torch's default allowlist is not enough
    weights = read_weights(path)
    assert "mamba_layer.mamba.A_log" in weights
    assert "decoder.seg_layers.0.weight" in weights


def test_full_checkpoint_with_heads(nnunet_checkpoint: tuple[Path, torch.nn.Module]) -> None:
    path, source = nnunet_checkpoint
    net = tiny_network(seed=1)
    lines: list[str] = []
    report = load_pretrained(net, path, keep_heads=True, log=lines.append)
    total = _distinct(net)
    assert report.counts() == {
        "total": total,
        "loaded": total,
        "skipped_heads": 0,
        "mismatched": 0,
        "missing": 0,
        "unused": 0,
    }
    assert lines == [
        f"loaded {total} of {total} tensors from {path} (0 seg-head tensors re-initialised, 0 not in the "
        "checkpoint, 0 of its tensors unused)"
    ]
    for name, value in source.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_full_checkpoint_without_heads_reinitialises_them(nnunet_checkpoint: tuple[Path, torch.nn.Module]) -> None:
    path, source = nnunet_checkpoint
    net = tiny_network(seed=1)
    fresh = copy.deepcopy(net)
    report = load_pretrained(net, path, keep_heads=False, log=lambda _: None)
    heads = _head_names(net)
    assert len(heads) == 4  # two deep-supervision heads, weight and bias
    assert sorted(report.skipped_heads) == sorted(heads)
    assert len(report.loaded) == _distinct(net) - 4
    assert len(report.unused) == 4  # the checkpoint's heads
    assert all(".seg_layers." in name for name in report.unused)
    for name in heads:
        assert _same(net, fresh, name), name
        assert not _same(net, source, name), name
    assert _same(net, source, "mamba_layer.mamba.in_proj.weight")
    assert _same(net, source, "encoder.stem.convs.0.conv.weight")
    assert "4 seg-head tensors re-initialised" in report.summary()


def test_encoder_only_partial_checkpoint(tmp_path: Path) -> None:
    """Self-supervised weights: only the encoder, in a MONAI-style {"state_dict": ...} without aliases."""
    source = tiny_network(seed=2)
    encoder = {f"encoder.{k}": v for k, v in source.encoder.state_dict().items() if ".all_modules." not in k}
    torch.save({"state_dict": encoder, "epoch": 3}, tmp_path / "dae.pt")
    net = tiny_network(seed=1)
    report = load_pretrained(net, tmp_path / "dae.pt", keep_heads=False, log=lambda _: None)
    n_encoder = len(list(net.encoder.parameters()))
    assert len(report.loaded) == n_encoder
    assert len(report.missing) == _distinct(net) - n_encoder - 4  # decoder and Mamba layer keep their init
    assert report.unused == ()
    # One tensor under three names: loaded through encoder.*, so decoder.encoder.* and all_modules.* too.
    assert _same(net, source, "decoder.encoder.stem.convs.0.all_modules.0.weight")
    assert not _same(net, source, "mamba_layer.mamba.in_proj.weight")

    with pytest.raises(BackendError, match=r"dae\.pt: does not fit this network with its seg heads: .* is not in"):
        load_pretrained(tiny_network(), tmp_path / "dae.pt", keep_heads=True, log=lambda _: None)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_ddp_and_compile_prefixes_are_stripped(tmp_path: Path, prefix: str) -> None:
    source = tiny_network(seed=2)
    torch.save({f"{prefix}{k}": v for k, v in source.state_dict().items()}, tmp_path / "bare.pth")
    net = tiny_network(seed=1)
    report = load_pretrained(net, tmp_path / "bare.pth", keep_heads=True, log=lambda _: None)
    assert len(report.loaded) == report.total
    assert _same(net, source, "decoder.seg_layers.1.weight")


def test_model_key_layout(tmp_path: Path) -> None:
    source = tiny_network(seed=2)
    torch.save({"model": source.state_dict(), "optimizer": {"lr": 0.1}}, tmp_path / "m.pt")
    report = load_pretrained(tiny_network(seed=1), tmp_path / "m.pt", keep_heads=True, log=lambda _: None)
    assert len(report.loaded) == report.total


def test_other_class_count_keeps_heads_off_or_fails_with_them(tmp_path: Path) -> None:
    """Weights of a 4-class model into a 3-class one: the heads cannot be kept."""
    torch.save(tiny_network(classes=4, seed=2).state_dict(), tmp_path / "four.pth")
    with pytest.raises(BackendError) as info:
        load_pretrained(tiny_network(), tmp_path / "four.pth", keep_heads=True, log=lambda _: None)
    message = str(info.value)
    assert "\n" not in message
    assert "decoder.seg_layers.0.weight has shape (4, 8, 1, 1, 1) in the checkpoint, the network expects" in message
    assert "(and 3 more)" in message
    report = load_pretrained(tiny_network(), tmp_path / "four.pth", keep_heads=False, log=lambda _: None)
    assert len(report.loaded) == report.total - 4
    assert report.mismatched == ()
    assert len(report.unused) == 4


def test_other_input_channels_load_the_rest(tmp_path: Path) -> None:
    """A stem of another width does not fit; everything else does (reported as of another shape)."""
    source = tiny_network(channels=1, seed=2)
    torch.save(source.state_dict(), tmp_path / "one_channel.pth")
    net = tiny_network(channels=2)
    report = load_pretrained(net, tmp_path / "one_channel.pth", keep_heads=False, log=lambda _: None)
    assert report.mismatched == ("encoder.stem.convs.0.conv.weight",)
    assert len(report.loaded) == report.total - 4 - 1
    assert ", 1 of another shape, " in report.summary()
    assert _same(net, source, "encoder.stages.1.blocks.0.conv1.conv.weight")


def test_nothing_fits(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(3)}, tmp_path / "mlp.pth")
    with pytest.raises(BackendError, match=r"mlp\.pth: does not fit this network: none of its 2 tensors matches"):
        load_pretrained(tiny_network(), tmp_path / "mlp.pth", keep_heads=False, log=lambda _: None)


def _plain_unet(features: list[int]) -> torch.nn.Module:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    return PlainConvUNet(
        input_channels=2,
        n_stages=3,
        features_per_stage=features,
        conv_op=torch.nn.Conv3d,
        kernel_sizes=3,
        strides=[1, 2, 2],
        n_conv_per_stage=2,
        num_classes=3,
        n_conv_per_stage_decoder=1,
        conv_bias=True,
        norm_op=torch.nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU,
        deep_supervision=True,
    )


@pytest.mark.parametrize("features", [[4, 8, 16], [8, 16, 32]])
def test_plain_unet_weights_are_another_architecture(tmp_path: Path, features: list[int]) -> None:
    """A PlainConvUNet: with the same widths its decoder would fit by name and shape, its encoder never."""
    torch.save({"network_weights": _plain_unet(features).state_dict()}, tmp_path / "plain.pth")
    net = tiny_network()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(BackendError, match=r"plain\.pth: does not fit this network: none of its") as info:
        load_pretrained(net, tmp_path / "plain.pth", keep_heads=False, log=lambda _: None)
    assert "\n" not in str(info.value)
    for name, value in net.state_dict().items():  # nothing was loaded
        assert torch.equal(value, before[name]), name
    # Also with the heads kept: it is not a matter of the heads, so the message is the same.
    with pytest.raises(BackendError, match=r"plain\.pth: does not fit this network: none of its"):
        load_pretrained(net, tmp_path / "plain.pth", keep_heads=True, log=lambda _: None)


def test_unreadable_files(tmp_path: Path) -> None:
    net = tiny_network()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "empty.pth")
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buf)
    (tmp_path / "cut.pth").write_bytes(buf.getvalue()[:100])
    cases = {
        "missing.pth": "pretrained weights not found",
        "junk.pth": "cannot read pretrained weights with weights_only=True",
        "cut.pth": "cannot read pretrained weights with weights_only=True",
        "empty.pth": "no network weights in it",
    }
    for name, expected in cases.items():
        with pytest.raises(BackendError) as info:
            load_pretrained(net, tmp_path / name, keep_heads=False, log=lambda _: None)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / name}: {expected}"), message
        assert "\n" not in message


class Opaque:
    """Pickled by reference: loading it would import and run code named by the file."""


def test_code_carrying_pickle_is_refused_not_run(tmp_path: Path) -> None:
    torch.save({"state_dict": tiny_network().state_dict(), "extra": Opaque()}, tmp_path / "pickled.pth")
    with pytest.raises(BackendError, match=r"it refers to .*Opaque, which is not plain data"):
        load_pretrained(tiny_network(), tmp_path / "pickled.pth", keep_heads=False, log=lambda _: None)


def test_numpy_1_checkpoint_names_load(tmp_path: Path) -> None:
    """Files from numpy 1.x name the scalar constructor numpy.core.multiarray.scalar."""
    import numpy as np

    buf = io.BytesIO()
    weights = tiny_network(seed=2).state_dict()
    torch.save({"network_weights": weights, "_best_ema": np.float64(0.5)}, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    assert raw.count(b"numpy._core.multiarray") == 1  # protocol-2 GLOBAL: newline-terminated, renamable
    (tmp_path / "np1.pth").write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert set(read_weights(tmp_path / "np1.pth")) == set(weights)


def test_apply_pretrained_initialises_and_unwraps_the_trainers_network(
    nnunet_checkpoint: tuple[Path, torch.nn.Module],
) -> None:
    path, source = nnunet_checkpoint
    fresh = tiny_trainer(nnUNetTrainer, initialize=False)
    report = apply_pretrained(fresh, path, keep_heads=True, log=lambda _: None)
    assert fresh.was_initialized
    assert isinstance(report, PretrainedReport)
    assert len(report.loaded) == report.total
    assert _same(fresh.network, source, "decoder.seg_layers.0.weight")
    # The optimizer built by initialize() still holds the (loaded-in-place) parameters.
    held = {id(p) for group in fresh.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in fresh.network.parameters()} <= held

    compiled = tiny_trainer(nnUNetTrainer)
    compiled.network = torch.compile(compiled.network)  # wrapping only; nothing is compiled until called
    report = apply_pretrained(compiled, path, keep_heads=False, log=lambda _: None)
    assert len(report.skipped_heads) == 4
    assert _same(compiled.network._orig_mod, source, "mamba_layer.mamba.A_log")
