"""MONAI backend without training: options, safe bundle reading, download, weights, freezing, checkpoints."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _monai_bundle import TINY_NETWORK, make_bundle

from segkit.backends.base import validate_options
from segkit.backends.monai_bundle import MonaiBundleBackend, MonaiOptions
from segkit.backends.monai_bundle import bundle as bd
from segkit.backends.monai_bundle import checkpoints as ck
from segkit.backends.monai_bundle import network as nw
from segkit.backends.monai_bundle.training import accumulation_plan
from segkit.errors import BackendError, ConfigError, DataError
from segkit.progress import RecordingProgress

torch = pytest.importorskip("torch")
pytest.importorskip("monai")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a model hub: MONAI's hub downloads fail fast instead."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SEGKIT_OFFLINE", raising=False)


def options(tmp_path: Path, **values) -> MonaiOptions:
    return MonaiOptions.model_validate({"bundle_dir": tmp_path / "bundles", **values})


# --------------------------------------------------------------------------- options


def test_class_weights_need_five_values() -> None:
    with pytest.raises(ConfigError) as err:
        validate_options(MonaiBundleBackend(), {"class_weights": [1, 2, 3]}, where="backends.monai")
    assert str(err.value).startswith("backends.monai.class_weights: expected exactly 5 values")
    assert validate_options(MonaiBundleBackend(), {"class_weights": [0.1, 1, 1, 2, 1]}, where="x").class_weights


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("patch_size", [96, 96, 36], "multiple of 8"),
        ("roi_size", [100, 96, 96], "multiple of 8"),
        ("network_overrides", {"init_filters": "$8*2"}, "network_overrides: init_filters is the expression '$8*2'"),
        ("network_overrides", {"filters": 8}, "'filters' is not a SegResNet argument"),
        ("network_overrides", {"out_channels": 3}, "out_channels is always 5"),
        ("crop_ratios", [1, 1], "expected 5 non-negative values"),
    ],
)
def test_bad_options(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_options(MonaiBundleBackend(), {key: value}, where="backends.monai")


def test_bundle_name_none_means_no_bundle() -> None:
    assert MonaiOptions(bundle_name="none").bundle_name is None
    assert MonaiOptions().bundle_name == "brats_mri_segmentation"


def test_accumulation_steps_on_the_last_partial_group() -> None:
    assert accumulation_plan(5, 2) == [(0.5, False), (0.5, True), (0.5, False), (0.5, True), (1.0, True)]
    assert accumulation_plan(3, 1) == [(1.0, True)] * 3
    assert accumulation_plan(2, 4) == [(0.5, False), (0.5, True)]
    # every group's scales sum to one: its gradient is the mean over its batches
    plan = accumulation_plan(7, 3)
    assert sum(s for s, _ in plan) == pytest.approx(3.0)
    assert [i for i, (_, step) in enumerate(plan) if step] == [2, 5, 6]


# --------------------------------------------------------------------------- reading a bundle safely


def test_read_local_bundle(tmp_path: Path) -> None:
    make_bundle(tmp_path / "bundles")
    bundle = bd.read_bundle(options(tmp_path))
    assert bundle.network_args == {k: v for k, v in TINY_NETWORK.items() if k != "_target_"}
    assert bundle.channel_order == ("t1c", "t1n", "t2w", "t2f")
    assert bundle.version == "0.5.2-test"
    assert bundle.weights == tmp_path / "bundles" / "brats_mri_segmentation" / "models" / "model.pt"


def test_bundle_expressions_are_refused_without_trust(tmp_path: Path) -> None:
    net_def = {**TINY_NETWORK, "init_filters": "$4 * 2"}
    make_bundle(tmp_path / "bundles", network_def=net_def)
    with pytest.raises(BackendError) as err:
        bd.check_bundle(options(tmp_path))
    message = str(err.value)
    assert "network_def#init_filters is the expression '$4 * 2'" in message
    assert "\n" not in message
    assert "--trust-bundle" in (err.value.hint or "")
    # trusted: MONAI's ConfigParser evaluates the expression
    bundle = bd.read_bundle(options(tmp_path, trust_bundle=True))
    assert bundle.network_args["init_filters"] == 8


@pytest.mark.parametrize(
    ("net_def", "message"),
    [
        ({**TINY_NETWORK, "_target_": "UNet"}, "fine-tunes SegResNet bundles only"),
        ({**TINY_NETWORK, "_requires_": "$print('hi')"}, "is a MONAI config directive"),
        ({**TINY_NETWORK, "blocks_down": [1, "@depth", 2, 4]}, "blocks_down[1] is the expression '@depth'"),
        ("$monai.networks.nets.SegResNet()", "is the expression"),
        ({**TINY_NETWORK, "init_features": 8}, "is not an argument of SegResNet"),
    ],
)
def test_unsafe_or_unsupported_network_def(tmp_path: Path, net_def: object, message: str) -> None:
    make_bundle(tmp_path / "bundles", network_def=net_def)
    with pytest.raises(BackendError, match=re.escape(message)):
        bd.read_bundle(options(tmp_path))


def test_the_rest_of_the_config_is_never_evaluated(tmp_path: Path) -> None:
    # expressions outside network_def (the real bundle has many) are not read at all
    marker = tmp_path / "evaluated"
    extra = {"boom": f"$open({str(marker)!r}, 'w').write('x')"}
    make_bundle(tmp_path / "bundles", extra_config=extra)
    bd.read_bundle(options(tmp_path))
    assert not marker.exists()


def test_channel_def_maps_to_brats_modalities(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "bundles")
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    channel_def = {"0": "FLAIR", "1": "T1ce", "2": "T1", "3": "T2"}
    meta["network_data_format"]["inputs"]["image"]["channel_def"] = channel_def
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    assert bd.read_bundle(options(tmp_path)).channel_order == ("t2f", "t1c", "t1n", "t2w")
    meta["network_data_format"]["inputs"]["image"]["channel_def"] = {"0": "T1c", "1": "DWI", "2": "T2", "3": "FLAIR"}
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BackendError, match="channel 1 is 'DWI', which is not a BraTS modality"):
        bd.read_bundle(options(tmp_path))


def test_bundle_without_weights_offline_is_one_line(tmp_path: Path) -> None:
    make_bundle(tmp_path / "bundles", weights=False)
    with pytest.raises(BackendError) as err:
        bd.check_bundle(options(tmp_path))
    weights = tmp_path / "bundles" / "brats_mri_segmentation" / "models" / "model.pt"
    assert str(err.value) == (
        f"bundle 'brats_mri_segmentation' has no weights: {weights} is missing and HF_HUB_OFFLINE is set"
    )
    assert err.value.hint is not None
    assert f"copy {tmp_path / 'bundles' / 'brats_mri_segmentation'}/ from a machine" in err.value.hint


def test_no_bundle_at_all_with_download_disabled(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"is missing and downloading is disabled \(download: false\)"):
        bd.ensure_bundle(options(tmp_path, download=False))


def test_no_bundle_mode_needs_nothing(tmp_path: Path) -> None:
    bundle = bd.ensure_bundle(options(tmp_path, bundle_name="none"))
    assert bundle.weights is None
    assert bundle.network_args["init_filters"] == 16
    assert bundle.channel_order == ("t1c", "t1n", "t2w", "t2f")


# --------------------------------------------------------------------------- download from a local server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt: str, *args: object) -> None:
        pass


@pytest.fixture
def bundle_server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving ``brats_mri_segmentation.zip`` (top folder brats_mri_segmentation/)."""
    src = tmp_path / "upstream"
    make_bundle(src, seed=5)
    served = tmp_path / "served"
    served.mkdir()
    shutil.make_archive(str(served / "brats_mri_segmentation"), "zip", root_dir=src, base_dir="brats_mri_segmentation")
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_from_url(tmp_path: Path, bundle_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    opts = options(tmp_path, bundle_url=f"{bundle_server}/brats_mri_segmentation.zip")
    bd.check_bundle(opts)  # missing but downloadable: not an error
    progress = RecordingProgress()
    bundle = bd.ensure_bundle(opts, progress=progress)
    folder = tmp_path / "bundles" / "brats_mri_segmentation"
    assert bundle.folder == folder
    assert (folder / "models" / "model.pt").is_file()
    upstream = torch.load(tmp_path / "upstream" / "brats_mri_segmentation" / "models" / "model.pt", weights_only=True)
    got = torch.load(folder / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(upstream[k], got[k]) for k in upstream)
    size = (tmp_path / "served" / "brats_mri_segmentation.zip").stat().st_size
    starts = [e for e in progress.events if e[0] == "start"]
    assert starts[0] == ("start", "downloading bundle brats_mri_segmentation", size)
    assert sum(e[1] for e in progress.events if e[0] == "advance") >= size
    assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == ["brats_mri_segmentation"]
    assert capsys.readouterr().out == "", "the download printed to stdout"


def test_download_checks_the_sha256(tmp_path: Path, bundle_server: str) -> None:
    url = f"{bundle_server}/brats_mri_segmentation.zip"
    with pytest.raises(BackendError, match="differs from bundle_sha256 0000"):
        bd.ensure_bundle(options(tmp_path, bundle_url=url, bundle_sha256="0" * 64))
    assert not (tmp_path / "bundles" / "brats_mri_segmentation").exists()
    digest = hashlib.sha256((tmp_path / "served" / "brats_mri_segmentation.zip").read_bytes()).hexdigest()
    assert bd.ensure_bundle(options(tmp_path, bundle_url=url, bundle_sha256=digest)).weights is not None


def test_failed_download_is_one_line(tmp_path: Path, bundle_server: str) -> None:
    opts = options(tmp_path, bundle_url=f"{bundle_server}/missing.zip")
    with pytest.raises(BackendError) as err:
        bd.ensure_bundle(opts)
    assert str(err.value).startswith(
        f"cannot download bundle 'brats_mri_segmentation' from {bundle_server}/missing.zip"
    )
    assert "404" in str(err.value)
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "bundles").iterdir()), "staging folder left behind"


# --------------------------------------------------------------------------- network, weights, freezing


def test_head_replaced_and_other_tensors_loaded(tmp_path: Path) -> None:
    make_bundle(tmp_path / "bundles")
    bundle = bd.read_bundle(options(tmp_path))
    net = nw.build_network(nw.network_args(bundle.network_args, {}))
    loaded, total = nw.load_bundle_weights(net, bundle.weights)
    assert (loaded, total) == (81, 83)
    source = torch.load(bundle.weights, weights_only=True)
    state = net.state_dict()
    assert state["conv_final.2.conv.weight"].shape == (5, 8, 1, 1, 1)
    assert source["conv_final.2.conv.weight"].shape == (3, 8, 1, 1, 1)
    assert torch.equal(state["convInit.conv.weight"], source["convInit.conv.weight"])
    assert torch.equal(state["up_layers.0.0.conv1.conv.weight"], source["up_layers.0.0.conv1.conv.weight"])
    out = net(torch.zeros(1, 4, 16, 16, 16))
    assert out.shape == (1, 5, 16, 16, 16)


def test_encoder_prefixes_select_the_encoder() -> None:
    net = nw.build_network(nw.network_args(bd.BUNDLE_NETWORK_ARGS, {"init_filters": 8}))
    encoder, rest = nw.parameter_groups(net, ["convInit", "down_layers"])
    assert encoder
    assert all(n.startswith(("convInit.", "down_layers.")) for n in encoder)
    assert all(n.startswith(("up_samples.", "up_layers.", "conv_final.")) for n in rest)
    trainable = nw.set_trainable(net, encoder)
    assert trainable == sum(p.numel() for n, p in net.named_parameters() if n in rest)
    with pytest.raises(ConfigError, match=r"--encoder-prefix 'encoder' matches no parameter \(top-level modules: "):
        nw.parameter_groups(net, ["encoder"])


def test_mismatching_checkpoint_names_the_first_key(tmp_path: Path) -> None:
    small = nw.build_network(nw.network_args(bd.BUNDLE_NETWORK_ARGS, {"init_filters": 8}))
    other = nw.build_network(nw.network_args(bd.BUNDLE_NETWORK_ARGS, {"init_filters": 16}))
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(DataError, match=r"convInit.conv.weight has shape \(16, 4, 3, 3, 3\) in the checkpoint"):
        nw.load_strict(small, nw.read_state_dict(path, what="weights"), path)


def test_plain_state_dict_is_not_a_segkit_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(DataError, match="not a segkit MONAI checkpoint"):
        ck.read_checkpoint(path)
    assert ck.format_template("out/fold{fold}/stage2_best.pt", 3) == Path("out/fold3/stage2_best.pt")


def test_label_values_outside_brats_are_refused() -> None:
    from segkit.backends.monai_bundle.data import check_label_values

    check_label_values(torch.tensor([0.0, 1, 2, 3, 4]))
    with pytest.raises(DataError, match=r"label values \[0.0, 5.0\] are not the BraTS 2024 labels 0-4"):
        check_label_values(torch.tensor([0.0, 5.0]))
