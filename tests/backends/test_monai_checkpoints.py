"""segkit's MONAI checkpoint format: the typed metadata model, old checkpoints, one torch.load wrapper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segkit.backends.monai_bundle import checkpoints as ck
from segkit.backends.monai_bundle import network as nw
from segkit.errors import DataError

# the metadata of a stage-2 best checkpoint exactly as segkit wrote it before CheckpointMeta existed
TODAY_META = {
    "stage": 2,
    "epoch": 3,
    "fold": 1,
    "dataset": "Dataset501_BraTSPostTx",
    "best_metric": 0.71,
    "best_epoch": 3,
    "best_metric_name": "mean_dice",
    "best_mean_dice": 0.71,
    "best_wt_dice": 0.88,
    "network": {"name": "SegResNet", "args": {"spatial_dims": 3, "init_filters": 8, "out_channels": 5}},
    "channel_order": ["t1c", "t1n", "t2w", "t2f"],
    "labels": {"0": "background", "1": "NETC", "2": "SNFH", "3": "ET", "4": "RC"},
    "spacing": [1.0, 1.0, 1.0],
    "patch_size": [128, 128, 128],
    "encoder_prefix": ["convInit", "down_layers"],
    "bundle": {"name": "brats_mri_segmentation", "version": "0.5.3", "weights_sha256": "ab" * 32},
    "segkit_version": "0.1.0",
    "monai_version": "1.6.1",
    "torch_version": "2.14.1",
    "kind": "best",
}


def write_today(path: Path, meta: dict | None = None, **top: object) -> Path:
    """A checkpoint written with plain torch.save in the format of segkit's checkpoints today."""
    payload = {
        "format": ck.FORMAT,
        "format_version": 1,
        "meta": TODAY_META if meta is None else meta,
        "model": {"w": torch.ones(2)},
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {"last_epoch": 3},
        "scaler": {},
        **top,
    }
    torch.save(payload, path)
    return path


def test_a_checkpoint_in_todays_format_loads(tmp_path: Path) -> None:
    loaded = ck.read_checkpoint(write_today(tmp_path / "old.pt"))
    meta = loaded.meta
    assert (meta.stage, meta.epoch, meta.fold, meta.kind) == (2, 3, 1, "best")
    assert meta.dataset == "Dataset501_BraTSPostTx"
    assert meta.network_args["init_filters"] == 8
    assert meta.channel_order == ("t1c", "t1n", "t2w", "t2f")
    assert (meta.spacing, meta.patch_size) == ((1.0, 1.0, 1.0), (128, 128, 128))
    assert meta.bundle_name == "brats_mri_segmentation"
    assert torch.equal(loaded.model["w"], torch.ones(2))
    assert loaded.scheduler == {"last_epoch": 3}
    assert meta.to_dict() == TODAY_META  # written back key for key


def test_checkpoints_of_older_segkit_versions_load(tmp_path: Path) -> None:
    # before the dataset, the best scores and kind were recorded; unknown keys survive a round trip
    meta = {k: v for k, v in TODAY_META.items() if k not in ("dataset", "kind", "best_mean_dice", "best_wt_dice")}
    meta["notes"] = ["kept"]
    loaded = ck.read_checkpoint(write_today(tmp_path / "older.pt", meta))
    assert loaded.meta.dataset is None
    assert loaded.meta.kind is None
    assert loaded.meta.extra == {"notes": ["kept"]}
    assert loaded.meta.to_dict()["notes"] == ["kept"]


def test_save_and_read_round_trip(tmp_path: Path) -> None:
    meta = ck.CheckpointMeta.from_dict(TODAY_META)
    path = ck.save_checkpoint(tmp_path / "a.pt", ck.Checkpoint(meta, {"w": torch.zeros(3)}))
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["format_version"]) == (ck.FORMAT, ck.FORMAT_VERSION)
    assert raw["meta"] == TODAY_META
    assert "optimizer" not in raw  # only what was given
    assert ck.read_checkpoint(path).meta == meta


def test_newer_and_malformed_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"written by a newer segkit \(checkpoint format 2\)"):
        ck.read_checkpoint(write_today(tmp_path / "new.pt", format_version=2))
    no_epoch = {k: v for k, v in TODAY_META.items() if k != "epoch"}
    with pytest.raises(DataError, match=r"bad.pt: malformed segkit checkpoint metadata \(KeyError"):
        ck.read_checkpoint(write_today(tmp_path / "bad.pt", no_epoch))
    with pytest.raises(DataError, match=r"worse.pt: malformed segkit checkpoint metadata \(ValueError"):
        ck.read_checkpoint(write_today(tmp_path / "worse.pt", {**TODAY_META, "stage": "two"}))


class _Pickled:
    """Not loadable with weights_only=True."""


def test_one_torch_load_wrapper_for_checkpoints_and_weights(tmp_path: Path) -> None:
    path = tmp_path / "pickle.pt"
    torch.save({"obj": _Pickled()}, path)
    with pytest.raises(DataError, match=r"pickle.pt: cannot load checkpoint with weights_only=True \("):
        ck.read_checkpoint(path)
    with pytest.raises(DataError, match=r"pickle.pt: cannot load bundle weights with weights_only=True \("):
        nw.read_state_dict(path, what="bundle weights")
    with pytest.raises(DataError, match=r"missing.pt: checkpoint not found"):
        ck.read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(DataError, match=r"missing.pt: weights not found"):
        nw.read_state_dict(tmp_path / "missing.pt", what="weights")
