"""MONAI backend without training: options, safe bundle reading, download, weights, freezing, checkpoints."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _monai_bundle import TINY_NETWORK, make_bundle
from monai.transforms import Compose

from segkit.backends.base import CaseImages, DatasetRef, PredictRequest, validate_options
from segkit.backends.monai_bundle import MonaiBundleBackend, MonaiOptions
from segkit.backends.monai_bundle import bundle as bd
from segkit.backends.monai_bundle import checkpoints as ck
from segkit.backends.monai_bundle import data as dm
from segkit.backends.monai_bundle import network as nw
from segkit.backends.monai_bundle.backend import _check_fold_folder
from segkit.backends.monai_bundle.inference import LoadedModel, predict_cases
from segkit.backends.monai_bundle.schedule import accumulation_plan, cosine_schedule
from segkit.data.inputs import resolve_inputs
from segkit.data.splits import write_splits
from segkit.data.synth import write_cohort
from segkit.errors import BackendError, ConfigError, DataError, OutputError
from segkit.io import read_json, read_volume, write_volume
from segkit.progress import NullProgress, RecordingProgress


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
        ("spacing", [0, 1, 1], "spacing: spacing 0 1 1: every value must be a positive number of mm"),
        ("spacing", [1, -0.5, 1], "spacing: spacing 1 -0.5 1: every value must be a positive number of mm"),
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


def test_a_resumed_schedule_is_the_uninterrupted_one_of_the_new_length() -> None:
    """Resuming after epoch 1 of a 2-epoch run into a 4-epoch run: each resumed epoch gets the lr an
    uninterrupted 4-epoch run gives it (torch's own CosineAnnealingLR is the reference)."""
    param = torch.nn.Parameter(torch.zeros(1))
    reference = torch.optim.AdamW([param], lr=1e-3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=4)
    uninterrupted = []
    for _ in range(4):
        uninterrupted.append(reference.param_groups[0]["lr"])
        reference.step()
        cosine.step()
    # the old run: 2 epochs, one done; its optimizer state holds that run's lr
    old = torch.optim.AdamW([param], lr=1e-3)
    old_schedule = cosine_schedule(old, 2)
    old.step()
    old_schedule.step()
    resumed = torch.optim.AdamW([param], lr=1e-3)
    resumed.load_state_dict(old.state_dict())
    for group in resumed.param_groups:  # as _run_stage does: this run's base lr
        group["initial_lr"] = 1e-3
    schedule = cosine_schedule(resumed, 4, start_epoch=1)
    got = []
    for _ in range(1, 4):
        got.append(resumed.param_groups[0]["lr"])
        resumed.step()
        schedule.step()
    assert got == pytest.approx(uninterrupted[1:], rel=1e-9)
    assert got[0] > 0.8e-3, "the resumed epoch ran on the old run's schedule"
    assert cosine_schedule(torch.optim.AdamW([param], lr=2e-3), 4).get_last_lr() == [2e-3]


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
    with pytest.raises(BackendError, match="channel_def: channel 1 is named 'DWI', which is not a BraTS modality"):
        bd.read_bundle(options(tmp_path))
    meta["network_data_format"]["inputs"]["image"]["channel_def"] = {"0": "T1c", "1": "T1c", "2": "T2", "3": "FLAIR"}
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BackendError, match=r"channel_def: the channels .* are not the four BraTS modalities"):
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
    with pytest.warns(UserWarning, match="No hash value provided"):  # no bundle_sha256: unverified
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


def test_a_download_without_sha256_is_reported_unverified(tmp_path: Path, bundle_server: str) -> None:
    url = f"{bundle_server}/brats_mri_segmentation.zip"
    with pytest.warns(UserWarning, match="No hash value provided"):  # MONAI's own warning is not hidden
        bundle = bd.ensure_bundle(options(tmp_path, bundle_url=url))
    archive = hashlib.sha256((tmp_path / "served" / "brats_mri_segmentation.zip").read_bytes()).hexdigest()
    unverified = [n for n in bundle.notes if "unverified download" in n]
    assert unverified == [
        f"bundle brats_mri_segmentation: unverified download from {url} (SHA-256 {archive}; "
        "set bundle_sha256 to check it)"
    ]
    weights = hashlib.sha256(bundle.weights.read_bytes()).hexdigest()
    assert bundle.weights_sha256 == weights
    assert f"{bundle.weights}: SHA-256 {weights}" in bundle.notes


def test_download_checks_the_sha256(tmp_path: Path, bundle_server: str) -> None:
    url = f"{bundle_server}/brats_mri_segmentation.zip"
    with pytest.raises(BackendError, match="differs from bundle_sha256 0000"):
        bd.ensure_bundle(options(tmp_path, bundle_url=url, bundle_sha256="0" * 64))
    assert not (tmp_path / "bundles" / "brats_mri_segmentation").exists()
    digest = hashlib.sha256((tmp_path / "served" / "brats_mri_segmentation.zip").read_bytes()).hexdigest()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = bd.ensure_bundle(options(tmp_path, bundle_url=url, bundle_sha256=digest))
    assert bundle.weights is not None
    assert not [w for w in caught if "No hash value provided" in str(w.message)], "verified, yet MONAI warned"
    assert not [n for n in bundle.notes if "unverified" in n]


def test_bundle_sha256_needs_a_bundle_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bundle_sha256 is the SHA-256 of a bundle_url archive"):
        bd.check_bundle(options(tmp_path, bundle_sha256="a" * 64))


def test_a_local_bundle_records_the_sha256_of_its_weights(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "bundles")
    bundle = bd.ensure_bundle(options(tmp_path))
    assert bundle.weights_sha256 == hashlib.sha256((folder / "models" / "model.pt").read_bytes()).hexdigest()
    assert not [n for n in bundle.notes if "unverified" in n], "nothing was downloaded"


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


def test_prefixes_that_freeze_everything_are_refused() -> None:
    net = nw.build_network(nw.network_args(bd.BUNDLE_NETWORK_ARGS, {"init_filters": 8}))
    assert nw.stage1_frozen(net, ["convInit", "down_layers"])
    everything = ["convInit", "down_layers", "up_samples", "up_layers", "conv_final"]
    with pytest.raises(ConfigError) as err:
        nw.stage1_frozen(net, everything)
    assert str(err.value) == (
        "--encoder-prefix convInit, down_layers, up_samples, up_layers, conv_final freezes every parameter, "
        "so stage 1 would train nothing"
    )
    assert "--stage1-epochs 0" in (err.value.hint or "")


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


# --------------------------------------------------------------------------- folds, data roots, cache size


def dataset_ref(tmp_path: Path) -> DatasetRef:
    return DatasetRef("Dataset501_BraTSPostTx", tmp_path / "raw", tmp_path / "pre", tmp_path / "res")


def test_fold_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    write_splits(["a", "b", "c", "d"], tmp_path / "splits.json", n_folds=2)
    with pytest.raises(ConfigError, match=r"fold 2 is out of range: .*splits.json has 2 folds \(0-1\)"):
        dm.read_fold(tmp_path / "splits.json", 2)


def test_duplicate_case_ids_across_data_roots_are_refused(tmp_path: Path, cohort: Path) -> None:
    first = sorted(p for p in cohort.iterdir() if p.is_dir())[0]
    other = tmp_path / "more"
    shutil.copytree(first, other / first.name)
    with pytest.raises(DataError) as err:
        dm.labelled_cases([first.name], roots=[cohort, other], dataset=dataset_ref(tmp_path), source="fold 0")
    assert str(err.value) == f"{first.name}: duplicate case id in {first} and {other / first.name}"


def test_class_indices_are_bounded(tmp_path: Path) -> None:
    write_cohort(tmp_path / "c", cases=1, shape=(32, 32, 32), seed=2)
    (case,) = dm.labelled_cases(
        ["BraTS-GLI-00000-000"], roots=[tmp_path / "c"], dataset=dataset_ref(tmp_path), source="test"
    )
    chain = dm.training_transforms((1.0, 1.0, 1.0), (16, 16, 16), num_samples=1, crop_ratios=None)
    names = [type(t).__name__ for t in chain.transforms]
    upto = Compose(chain.transforms[: names.index("ClassesToIndicesd") + 1])
    out = upto(dm.record(case.images, ("t1c", "t1n", "t2w", "t2f"), label=case.label, case_id=case.case_id))
    sizes = [len(i) for i in out["label_cls_indices"]]
    assert sizes[0] == dm.MAX_SAMPLES_PER_CLASS, "background (most of 32^3 voxels) is subsampled"
    assert sum(sizes) < 32**3


def test_cache_size_is_estimated_from_the_header(tmp_path: Path) -> None:
    write_volume(tmp_path / "mni.nii.gz", np.zeros((182, 218, 182), np.uint8), np.eye(4))
    case_bytes = dm.cached_case_bytes(tmp_path / "mni.nii.gz", (1.0, 1.0, 1.0), (128, 128, 128))
    assert 140e6 < case_bytes < 150e6, "about 150 MB per case on the 1 mm grid"
    # at 2 mm the grid shrinks eightfold, but never below one patch
    assert dm.cached_case_bytes(tmp_path / "mni.nii.gz", (2.0, 2.0, 2.0), (128, 128, 128)) > 128**3 * 20
    assert dm.auto_cache_rate(100, 150_000_000, 16_000_000_000) == 0.53
    assert dm.auto_cache_rate(100, 150_000_000, 16_000_000_000, processes=4) == 0.13
    assert dm.auto_cache_rate(10, 1_000_000, 16_000_000_000) == 1.0
    assert dm.auto_cache_rate(0, 1, 1) == 1.0
    assert MonaiOptions().cache_rate is None, "the default is sized to the machine, not 1.0"
    available = dm.available_memory()
    assert available is None or available > 0


# --------------------------------------------------------------------------- an earlier run in the fold folder


def test_an_earlier_run_in_the_fold_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "out"
    checkpoints = root / "fold0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("stage1_best.pt", "stage2_best.pt", "stage2_epoch3.pt", "stage2_epoch4.pt"):
        ck.save_checkpoint(
            checkpoints / name, ck.Checkpoint(ck.CheckpointMeta(stage=int(name[5]), epoch=1, fold=0), {})
        )
    (checkpoints / "my_notes.txt").write_text("not segkit's")
    assert [p.name for p in ck.run_files(root / "fold0")] == [
        "stage1_best.pt",
        "stage2_best.pt",
        "stage2_epoch3.pt",
        "stage2_epoch4.pt",
    ]
    with pytest.raises(OutputError) as err:
        _check_fold_folder(options(tmp_path, output_root=root), 0)
    assert str(err.value) == (
        f"{root / 'fold0'} holds an earlier run (stage1_best.pt, stage2_best.pt, stage2_epoch3.pt, ...); "
        "refusing to mix this run into it"
    )
    assert "--overwrite" in (err.value.hint or "")
    _check_fold_folder(options(tmp_path, output_root=root, overwrite=True), 0)
    _check_fold_folder(options(tmp_path, output_root=root), 1)  # another fold's folder is empty
    in_place = checkpoints / "stage2_epoch3.pt"
    _check_fold_folder(options(tmp_path, output_root=root, resume=in_place), 0)  # continues that run
    with pytest.raises(ConfigError, match=r"--overwrite would delete .*stage2_epoch3.pt, the checkpoint --resume"):
        _check_fold_folder(options(tmp_path, output_root=root, resume=in_place, overwrite=True), 0)
    with pytest.raises(OutputError, match=r"stage2_best.pt would outlive this resumed run, which trains no stage 2"):
        _check_fold_folder(
            options(tmp_path, output_root=root, resume=checkpoints / "stage1_best.pt", stage2_epochs=0), 0
        )
    elsewhere = tmp_path / "other" / "fold0" / "checkpoints" / "stage1_epoch1.pt"
    with pytest.raises(OutputError, match="holds an earlier run"):
        _check_fold_folder(options(tmp_path, output_root=root, resume=elsewhere), 0)


# --------------------------------------------------------------------------- prediction (no training)

TINY_ARGS = nw.network_args({k: v for k, v in TINY_NETWORK.items() if k != "_target_"}, {})
ORDER = ("t1c", "t1n", "t2w", "t2f")
STUB_META = ck.CheckpointMeta(stage=2, epoch=1, fold=0, channel_order=ORDER, spacing=(1.0,) * 3, patch_size=(16,) * 3)


def fake_checkpoint(
    path: Path,
    *,
    args: dict[str, Any] | None = None,
    channel_order: tuple[str, ...] = ORDER,
    bundle: str | None = "brats_mri_segmentation",
    dataset: str | None = None,
) -> Path:
    """A segkit checkpoint of a random tiny SegResNet (fold 0, stage 2), as training writes them.

    Without `dataset` it is a checkpoint of an older segkit, which did not record the dataset.
    """
    torch.manual_seed(0)
    net = nw.build_network(TINY_ARGS)
    meta = {
        "stage": 2,
        "epoch": 1,
        "fold": 0,
        **({"dataset": dataset} if dataset is not None else {}),
        "kind": "best",
        "network": {"name": "SegResNet", "args": args or TINY_ARGS},
        "channel_order": list(channel_order),
        "spacing": [1.0, 1.0, 1.0],
        "patch_size": [16, 16, 16],
        "bundle": {"name": bundle},
    }
    return ck.save_checkpoint(path, ck.Checkpoint(ck.CheckpointMeta.from_dict(meta), net.state_dict()))


@pytest.fixture
def cases(tmp_path: Path) -> tuple[CaseImages, ...]:
    write_cohort(tmp_path / "cases", cases=2, shape=(24, 24, 24), seed=1)
    return tuple(resolve_inputs([tmp_path / "cases"]))


def predict_request(tmp_path: Path, cases: tuple[CaseImages, ...], out: Path) -> PredictRequest:
    return PredictRequest(dataset_ref(tmp_path), cases, out, (0,), "cpu")


def test_checkpoint_of_another_architecture_leaves_no_output(tmp_path: Path, cases: tuple[CaseImages, ...]) -> None:
    path = fake_checkpoint(tmp_path / "ck.pt", args={**TINY_ARGS, "init_filters": 16})
    request = predict_request(tmp_path, cases, tmp_path / "out" / "pred")
    with pytest.raises(DataError) as err:
        MonaiBundleBackend().predict(request, options(tmp_path, checkpoint=path), progress=NullProgress())
    assert str(err.value) == (
        f"{path}: checkpoint does not fit the network its metadata describes: convInit.conv.weight has shape "
        "(8, 4, 3, 3, 3) in the checkpoint but (16, 4, 3, 3, 3) here"
    )
    assert not (tmp_path / "out").exists()


def test_a_case_that_cannot_be_read_leaves_no_output(tmp_path: Path, cases: tuple[CaseImages, ...]) -> None:
    path = fake_checkpoint(tmp_path / "ck.pt")
    t2w = cases[0].images["t2w"]
    data = t2w.read_bytes()
    t2w.write_bytes(b"not a NIfTI file")
    request = predict_request(tmp_path, cases, tmp_path / "out" / "pred")
    with pytest.raises(DataError, match=f"{re.escape(str(t2w))}: not a readable NIfTI file"):
        MonaiBundleBackend().check(request, options(tmp_path, checkpoint=path))
    # a readable header but truncated voxels: found only when MONAI loads the case, and the message
    # quotes what went wrong underneath MONAI's "applying transform <...>" wrapper
    t2w.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        MonaiBundleBackend().predict(request, options(tmp_path, checkpoint=path), progress=NullProgress())
    message = str(err.value)
    assert message.startswith(f"{cases[0].case_id}: cannot load and resample the images (")
    assert "applying transform" not in message
    assert " at 0x" not in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists()


def test_modalities_on_different_grids_are_found_in_the_headers(tmp_path: Path, cases: tuple[CaseImages, ...]) -> None:
    path = fake_checkpoint(tmp_path / "ck.pt")
    case = cases[1]
    t1c = read_volume(case.images["t1c"])
    write_volume(case.images["t2w"], np.zeros((24, 24, 20), np.float32), t1c.affine)
    request = predict_request(tmp_path, cases, tmp_path / "out" / "pred")
    with pytest.raises(DataError) as err:
        MonaiBundleBackend().predict(request, options(tmp_path, checkpoint=path), progress=NullProgress())
    assert str(err.value) == (
        f"{case.case_id}: {case.images['t2w']}: grid of t2w differs from t1c ({case.images['t1c'].name}): "
        "shape (24, 24, 20) vs (24, 24, 24)"
    )
    assert not (tmp_path / "out").exists(), "the first case was predicted before the second was refused"
    # MONAI's own test: affines that are not np.allclose cannot be stacked, however small the difference
    shifted = t1c.affine.copy()
    shifted[0, 1] = 1e-5
    write_volume(case.images["t2w"], t1c.data, shifted)
    with pytest.raises(DataError, match=r"grid of t2w differs from t1c .*: axis directions differ"):
        dm.check_case_grid(case.case_id, case.images)
    # without the check, MONAI's failure is still one line with the real cause
    stub = torch.nn.Identity()  # never reached: loading fails first
    with pytest.raises(DataError) as err:
        predict_cases(
            [case],
            [LoadedModel(path, STUB_META, stub)],
            MonaiOptions(),
            output_dir=tmp_path / "direct",
            device="cpu",
            overwrite=True,
            save_probabilities=False,
            progress=NullProgress(),
        )
    assert str(err.value).startswith(
        f"{case.case_id}: cannot load and resample the images (affine matrix of all images should be the same"
    )


def test_a_label_off_the_image_grid_is_refused(tmp_path: Path, cohort: Path) -> None:
    first = sorted(p for p in cohort.iterdir() if p.is_dir())[0]
    (case,) = dm.labelled_cases([first.name], roots=[cohort], dataset=dataset_ref(tmp_path), source="test")
    dm.check_case_grid(case.case_id, case.images, label=case.label)
    seg = read_volume(case.label)
    moved = seg.affine.copy()
    moved[:3, 3] += 2.0
    write_volume(case.label, seg.data, moved)
    with pytest.raises(DataError) as err:
        dm.check_case_grid(case.case_id, case.images, label=case.label)
    assert str(err.value).startswith(f"{case.case_id}: {case.label}: grid of the label differs from t1c (")
    assert "origin shifted by 3.46 mm" in str(err.value)


def test_a_checkpoint_of_another_dataset_is_refused(tmp_path: Path, cases: tuple[CaseImages, ...]) -> None:
    other = fake_checkpoint(tmp_path / "other.pt", dataset="Dataset777_X")
    request = predict_request(tmp_path, cases, tmp_path / "pred")  # Dataset501_BraTSPostTx
    with pytest.raises(ConfigError) as err:
        MonaiBundleBackend().check(request, options(tmp_path, checkpoint=other))
    assert str(err.value) == f"{other} was trained on Dataset777_X, not Dataset501_BraTSPostTx"
    assert "-d Dataset777_X" in (err.value.hint or "")
    # the dataset it was trained on, or none recorded (a checkpoint of an older segkit), predicts
    same = fake_checkpoint(tmp_path / "same.pt", dataset="Dataset501_BraTSPostTx")
    MonaiBundleBackend().check(request, options(tmp_path, checkpoint=same))
    old = fake_checkpoint(tmp_path / "old.pt")
    MonaiBundleBackend().check(request, options(tmp_path, checkpoint=old))
    # and --resume refuses to continue another dataset's run
    opts = options(tmp_path, bundle_name="none", network_overrides={"init_filters": 8}, resume=other)
    with pytest.raises(ConfigError, match=r"other.pt was trained on Dataset777_X, not Dataset501_BraTSPostTx"):
        MonaiBundleBackend()._check_weights(opts, 0, "Dataset501_BraTSPostTx")
    MonaiBundleBackend()._check_weights(opts, 0, "Dataset777_X")


def test_a_local_bundle_channel_def_is_checked(tmp_path: Path, cases: tuple[CaseImages, ...]) -> None:
    metadata = make_bundle(tmp_path / "bundles") / "configs" / "metadata.json"  # T1c T1 T2 FLAIR
    swapped = fake_checkpoint(tmp_path / "swapped.pt", channel_order=("t1n", "t1c", "t2w", "t2f"))
    request = predict_request(tmp_path, cases, tmp_path / "pred")
    with pytest.raises(ConfigError) as err:
        MonaiBundleBackend().check(request, options(tmp_path, checkpoint=swapped))
    assert str(err.value) == (
        f"{swapped}: trained on channels t1n t1c t2w t2f, but the channel_def of bundle brats_mri_segmentation "
        f"({metadata}) is t1c t1n t2w t2f"
    )
    # the matching order predicts, and the manifest names the metadata compared against
    good = fake_checkpoint(tmp_path / "good.pt")
    result = MonaiBundleBackend().predict(request, options(tmp_path, checkpoint=good), progress=NullProgress())
    assert len(result.files) == 2
    assert read_json(tmp_path / "pred" / "segkit_predict.json")["bundle_channel_def_checked"] == str(metadata)
    # no local bundle: inference needs none, compares nothing and downloads nothing
    elsewhere = options(tmp_path / "nowhere", checkpoint=swapped)
    MonaiBundleBackend().check(request, elsewhere)
    assert not (tmp_path / "nowhere").exists()
    # by default only a checkpoint fine-tuned from that bundle is compared
    unnamed = MonaiOptions.model_validate({"checkpoint": str(tmp_path / "fresh.pt")})
    fake_checkpoint(tmp_path / "fresh.pt", channel_order=("t1n", "t1c", "t2w", "t2f"), bundle=None)
    MonaiBundleBackend().check(request, unnamed)


def test_infer_takes_the_bundle_flags_of_the_seed_script(
    tmp_path: Path, cases: tuple[CaseImages, ...], run_cli
) -> None:
    make_bundle(tmp_path / "b")
    path = fake_checkpoint(tmp_path / "ck.pt", channel_order=("t2f", "t1c", "t1n", "t2w"))
    args = ["infer", "--backend", "monai", "--device", "cpu", "-i", tmp_path / "cases", "--fold", "0"]
    args += ["--checkpoint", path, "-o", tmp_path / "pred", "--set", f"nnunet.raw={tmp_path / 'raw'}"]
    result = run_cli(*args, "--bundle-name", "brats_mri_segmentation", "--bundle-dir", tmp_path / "b")
    assert result.code == 2, result.err
    assert result.err.splitlines()[0].startswith(f"error: {path}: trained on channels t2f t1c t1n t2w, but ")
    assert not (tmp_path / "pred").exists()
    result = run_cli(*args, "--bundle-name", "none")
    assert result.code == 0, result.err
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 2


# --------------------------------------------------------------------------- geometry: a known answer


class _ThresholdNet(torch.nn.Module):
    """Predicts class 2 where input channel `channel` (z-normalised) exceeds `threshold`, else background."""

    def __init__(self, channel: int, threshold: float) -> None:
        super().__init__()
        self.channel, self.threshold = channel, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((x.shape[0], 5, *x.shape[2:]), -10.0)
        out[:, 0] = 0.0
        out[:, 2] = 20.0 * (x[:, self.channel] - self.threshold)
        return out


SHAPE = (30, 34, 26)
SPACING = (1.0, 0.9, 1.2)


def _affine(kind: str) -> np.ndarray:
    affine = np.eye(4)
    if kind == "las":  # x flipped, anisotropic
        affine[:3, :3] = np.diag([-SPACING[0], SPACING[1], SPACING[2]])
    elif kind == "permuted":  # voxel axis 0 runs along world A, axis 1 along world L
        affine[:3, :3] = [[0, -SPACING[1], 0], [SPACING[0], 0, 0], [0, 0, SPACING[2]]]
    else:  # oblique: LAS rotated by 10 degrees about S
        t = np.deg2rad(10.0)
        rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        affine[:3, :3] = rotation @ np.diag([-SPACING[0], SPACING[1], SPACING[2]])
    affine[:3, 3] = [14.0, -15.0, -12.0]
    return affine


def _ball(affine: np.ndarray, centre: tuple[int, int, int], radius_mm: float) -> np.ndarray:
    """Voxels of a SHAPE grid within `radius_mm` (world distance) of voxel `centre`."""
    index = np.indices(SHAPE).reshape(3, -1).astype(float)
    world = affine[:3, :3] @ index + affine[:3, 3:]
    middle = affine[:3, :3] @ np.asarray(centre, float) + affine[:3, 3]
    return (np.linalg.norm(world - middle[:, None], axis=0) <= radius_mm).reshape(SHAPE)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("kind", ["las", "permuted", "oblique"])
def test_prediction_lands_on_the_input_grid(tmp_path: Path, kind: str) -> None:
    """A stub network thresholds t2f in the network's space (RAS, 1 mm); the written map must equal the
    same threshold on the case's own grid, and not a flipped one."""
    affine = _affine(kind)
    # each modality holds a 6 mm ball at its own off-centre place (100 inside, 10 outside)
    centres = {"t1c": (21, 22, 16), "t1n": (15, 26, 7), "t2w": (23, 8, 18), "t2f": (8, 12, 9)}
    images = {}
    for modality, centre in centres.items():
        data = np.where(_ball(affine, centre, 6.0), 100.0, 10.0).astype(np.float32)
        images[modality] = write_volume(tmp_path / f"case-{modality}.nii.gz", data, affine)
    t2f = read_volume(images["t2f"]).data.astype(np.float64)
    threshold = (55.0 - t2f.mean()) / t2f.std()  # 55 (halfway between 10 and 100) after z-normalisation
    model = LoadedModel(tmp_path / "stub.pt", STUB_META, _ThresholdNet(ORDER.index("t2f"), threshold))
    (written,), _ = predict_cases(
        [CaseImages("case", images)],
        [model],
        MonaiOptions(sw_batch_size=1),
        output_dir=tmp_path / "out",
        device="cpu",
        overwrite=True,
        save_probabilities=False,
        progress=NullProgress(),
    )
    pred = read_volume(written)
    assert pred.shape == SHAPE
    assert set(np.unique(pred.data)) == {0, 2}
    expected = t2f > 55.0
    dice = _dice(pred.data == 2, expected)
    assert dice >= 0.9, dice
    for axis in range(3):
        flipped = _dice(pred.data == 2, np.flip(expected, axis))
        assert flipped < dice - 0.5, f"axis {axis}: {flipped} vs {dice}"
