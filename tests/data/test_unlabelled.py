"""The unlabelled cohort: `data synth --unlabelled`, `data prepare --unlabelled-sources`, splits with "unlabeled"."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from _helpers import make_case, snapshot

from segkit.data.cases import discover_cases
from segkit.data.nnunet_dataset import check_dataset_splits, ensure_dataset_splits
from segkit.data.splits import folds_with_unlabelled, nnunet_splits, read_splits
from segkit.data.synth import SYNTH_MANIFEST, generate_case, write_cohort
from segkit.data.unlabelled import (
    SPLITS_KEY,
    UNLABELLED_KEY,
    read_unlabelled,
    unlabelled_ids,
    write_placeholder_segmentation,
)
from segkit.errors import ConfigError, DataError, OutputError

DATASET = "Dataset501_BraTSPostTx"
SHAPE = ("12", "12", "12")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 labelled cases in ``out`` and 3 unlabelled ones in ``out/unlabelled`` (12^3, seed 4)."""
    root = tmp_path_factory.mktemp("unlabelled") / "out"
    write_cohort(root, cases=6, unlabelled=3, shape=(12, 12, 12), seed=4)
    return root


def prepare(run_cli, raw: Path, *args):
    return run_cli("data", "prepare", "--nnunet-raw", raw, "--workers", "1", *args)


def leftovers(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir()) if raw.exists() else []


# --------------------------------------------------------------------------- synth


def test_synth_writes_the_unlabelled_cohort_as_a_separate_root(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("data", "synth", out, "--cases", "2", "--unlabelled", "2", "--shape", *SHAPE, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["cases"] == data["labelled"] == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    # numbered after the labelled cases, so that the ids of the two roots never clash
    assert data["unlabelled"] == ["BraTS-GLI-00002-000", "BraTS-GLI-00003-000"]
    assert Path(data["unlabelled_root"]) == out / "unlabelled"
    for case in data["unlabelled"]:
        names = sorted(p.name for p in (out / "unlabelled" / case).iterdir())
        assert names == [f"{case}-{m}.nii.gz" for m in ("t1c", "t1n", "t2f", "t2w")]
    # the output root stays a labelled root: discovery skips the nested one
    discovery = discover_cases([out])
    assert [c.case_id for c in discovery.cases] == data["cases"]
    assert all(c.labelled for c in discovery.cases)
    assert discovery.nested == (out / "unlabelled",)
    assert [c.case_id for c in discover_cases([out / "unlabelled"]).cases] == data["unlabelled"]
    manifest = json.loads((out / "unlabelled" / SYNTH_MANIFEST).read_text())
    assert {k: v["labelled"] for k, v in manifest["cases"].items()} == dict.fromkeys(data["unlabelled"], False)


def test_unlabelled_cases_are_deterministic_from_the_seed(tmp_path: Path) -> None:
    a = write_cohort(tmp_path / "a", cases=1, unlabelled=1, shape=(10, 10, 10), seed=9)
    b = write_cohort(tmp_path / "b", cases=1, unlabelled=1, shape=(10, 10, 10), seed=9)
    c = write_cohort(tmp_path / "c", cases=1, unlabelled=1, shape=(10, 10, 10), seed=10)
    assert a.unlabelled == b.unlabelled == ("BraTS-GLI-00001-000",)

    def t1c(result) -> np.ndarray:
        case = result.unlabelled[0]
        return np.asarray(nib.load(result.unlabelled_root / case / f"{case}-t1c.nii.gz").dataobj)

    assert np.array_equal(t1c(a), t1c(b))
    assert not np.array_equal(t1c(a), t1c(c))
    # the same case as `generate_case` gives (its lesion drawn, its labels just not written)
    expected = np.round(generate_case(1, shape=(10, 10, 10), seed=9).images["t1c"] * 1000).astype(np.int16)
    assert np.array_equal(t1c(a), expected)


def test_synth_refuses_ids_past_five_digits(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="5-digit"):
        write_cohort(tmp_path / "x", cases=1, unlabelled=2, start=99998, shape=(8, 8, 8))
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- prepare


def test_prepare_exports_unlabelled_cases_with_placeholders(synthetic: Path, tmp_path: Path, run_cli) -> None:
    before = snapshot(synthetic)
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", synthetic, "--unlabelled-sources", synthetic / "unlabelled")
    assert result.code == 0, result.err
    assert "unlabelled:     3" in result.out
    ds = raw / DATASET
    unlabelled = sorted(p.name for p in (synthetic / "unlabelled").iterdir() if p.is_dir())
    labelled = sorted(p.name for p in synthetic.iterdir() if p.is_dir() and p.name != "unlabelled")
    assert len(list((ds / "imagesTr").iterdir())) == 4 * 9
    assert sorted(p.name for p in (ds / "labelsTr").iterdir()) == sorted(f"{i}.nii.gz" for i in labelled + unlabelled)
    for case in unlabelled:
        seg = nib.load(ds / "labelsTr" / f"{case}.nii.gz")
        image = nib.load(ds / "imagesTr" / f"{case}_0000.nii.gz")
        assert seg.get_data_dtype() == np.uint8
        assert seg.shape == image.shape
        assert np.allclose(seg.affine, image.affine)
        assert not np.any(np.asarray(seg.dataobj))
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["numTraining"] == 9
    assert meta[UNLABELLED_KEY] == unlabelled
    assert unlabelled_ids(meta) == unlabelled
    assert meta["segkit"]["training_cases"] == labelled
    assert meta["segkit"]["sources"]["unlabelled"] == [str((synthetic / "unlabelled").resolve())]
    assert snapshot(synthetic) == before


def test_prepare_without_unlabelled_sources_writes_no_key(synthetic: Path, tmp_path: Path, run_cli) -> None:
    result = prepare(run_cli, tmp_path / "raw", "--train-sources", synthetic)
    assert result.code == 0, result.err
    meta = json.loads((tmp_path / "raw" / DATASET / "dataset.json").read_text())
    assert UNLABELLED_KEY not in meta
    assert meta["numTraining"] == 6


def test_an_unlabelled_source_case_with_a_segmentation_is_refused(synthetic: Path, tmp_path: Path, run_cli) -> None:
    extra = tmp_path / "extra"
    make_case(extra, "BraTS-GLI-00200-000", shape=(12, 12, 12))
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", synthetic, "--unlabelled-sources", extra)
    assert result.code == 1
    assert "BraTS-GLI-00200-000-seg.nii.gz: an unlabelled source case has a segmentation" in result.err
    assert len(result.err.strip().splitlines()) <= 2  # the message and its hint
    assert leftovers(raw) == []


def test_a_labelled_source_case_without_a_segmentation_is_refused(synthetic: Path, tmp_path: Path, run_cli) -> None:
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", synthetic, synthetic / "unlabelled")
    assert result.code == 1
    assert "missing segmentation (training cases need labels)" in result.err
    assert "--unlabelled-sources" in result.err
    assert leftovers(raw) == []


def test_an_id_both_labelled_and_unlabelled_is_refused(synthetic: Path, tmp_path: Path, run_cli) -> None:
    extra = tmp_path / "extra"
    make_case(extra, "BraTS-GLI-00000-000", shape=(12, 12, 12), labelled=False)
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", synthetic, "--unlabelled-sources", extra)
    assert result.code == 1
    assert "BraTS-GLI-00000-000: duplicate case id" in result.err
    assert leftovers(raw) == []
    result = prepare(run_cli, raw, "--train-sources", synthetic, "--unlabelled-sources", synthetic)
    assert result.code == 2  # a usage error
    assert "given both as an unlabelled and as a training source" in result.err
    assert leftovers(raw) == []


def test_placeholder_keeps_the_image_header_geometry(tmp_path: Path) -> None:
    affine = np.diag([-1.0, 1.5, 2.0, 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    image = nib.Nifti1Image(np.ones((8, 9, 10), dtype=np.int16), affine)
    qform = affine.copy()
    qform[0, 3] += 0.5  # a qform that disagrees with the sform: both must carry over as they are
    image.set_qform(qform, code=1)
    image.set_sform(affine, code=2)
    nib.save(image, tmp_path / "img.nii.gz")
    write_placeholder_segmentation(tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz")
    seg = nib.load(tmp_path / "seg.nii.gz")
    assert seg.shape == (8, 9, 10)
    assert seg.get_data_dtype() == np.uint8
    assert np.allclose(seg.header.get_qform(), qform)
    assert np.allclose(seg.header.get_sform(), affine)
    assert (int(seg.header["qform_code"]), int(seg.header["sform_code"])) == (1, 2)
    assert not np.any(np.asarray(seg.dataobj))


# --------------------------------------------------------------------------- splits


def _ids(n: int, prefix: str = "L") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def test_folds_are_nnunets_folds_of_the_labelled_cases() -> None:
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    labelled, unlabelled = _ids(11), _ids(4, "U")
    folds = folds_with_unlabelled([*unlabelled, *labelled], unlabelled)
    expected = generate_crossval_split(sorted(labelled), seed=12345, n_splits=5)
    assert [{"train": f["train"], "val": f["val"]} for f in folds] == expected
    assert all(f[SPLITS_KEY] == unlabelled for f in folds)
    assert folds_with_unlabelled(labelled, []) == nnunet_splits(labelled)


def test_too_few_labelled_cases_for_the_folds() -> None:
    with pytest.raises(DataError, match="at least 5 labelled training cases, found 4 \\(and 12 unlabelled\\)"):
        folds_with_unlabelled([*_ids(4), *_ids(12, "U")], _ids(12, "U"))


def test_read_unlabelled(tmp_path: Path) -> None:
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps(folds_with_unlabelled([*_ids(5), "U0", "U1"], ["U1", "U0"])))
    assert read_unlabelled(path, 0) == read_unlabelled(path, 4) == ["U0", "U1"]
    assert read_splits(path)[0][SPLITS_KEY] == ["U0", "U1"]
    with pytest.raises(ConfigError, match="fold 5 is out of range"):
        read_unlabelled(path, 5)
    path.write_text(json.dumps(nnunet_splits(_ids(5))))
    assert read_unlabelled(path, 0) == []
    path.write_text(json.dumps([{"train": ["a"], "val": ["b"], SPLITS_KEY: "U0"}]))
    with pytest.raises(DataError, match="not an nnU-Net splits file"):
        read_unlabelled(path, 0)
    with pytest.raises(DataError, match="not a list of case identifiers"):
        unlabelled_ids({UNLABELLED_KEY: "U0"})
    assert unlabelled_ids({}) == []


@pytest.fixture
def prepared(synthetic: Path, tmp_path: Path, run_cli) -> Path:
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", synthetic, "--unlabelled-sources", synthetic / "unlabelled")
    assert result.code == 0, result.err
    return raw


def _splits(run_cli, raw: Path, *args):
    return run_cli("data", "splits", "--nnunet-raw", raw, "--nnunet-preprocessed", raw.parent / "pre", *args)


def test_data_splits_keeps_unlabelled_cases_out_of_train_and_val(prepared: Path, run_cli) -> None:
    result = _splits(run_cli, prepared, "--json")
    assert result.code == 0, result.err
    path = prepared.parent / "pre" / DATASET / "splits_final.json"
    written = json.loads(path.read_text())
    meta = json.loads((prepared / DATASET / "dataset.json").read_text())
    unlabelled = meta[UNLABELLED_KEY]
    labelled = meta["segkit"]["training_cases"]
    assert [{"train": f["train"], "val": f["val"]} for f in written] == nnunet_splits(labelled)
    assert all(f[SPLITS_KEY] == unlabelled for f in written)
    assert _splits(run_cli, prepared).code == 0  # unchanged
    table = _splits(run_cli, prepared)
    assert "unlabeled" in table.out


def test_old_splits_without_the_key_are_refused_with_a_hint(prepared: Path, run_cli) -> None:
    path = prepared.parent / "pre" / DATASET / "splits_final.json"
    path.parent.mkdir(parents=True)
    every_id = sorted(p.name[:-12] for p in (prepared / DATASET / "imagesTr").glob("*_0000.nii.gz"))
    path.write_text(json.dumps(nnunet_splits(every_id)))  # what nnU-Net writes: placeholders in train/val
    result = _splits(run_cli, prepared)
    assert result.code == 1
    assert "has no 'unlabeled' lists, but the dataset has 3 unlabelled case(s)" in result.err
    assert "segkit data splits --overwrite" in result.err
    with pytest.raises(OutputError, match="has no 'unlabeled' lists"):
        check_dataset_splits(prepared / DATASET, path)
    assert _splits(run_cli, prepared, "--overwrite").code == 0
    assert check_dataset_splits(prepared / DATASET, path) == read_unlabelled(path, 0)


def test_splits_that_leak_an_unlabelled_case_are_refused(prepared: Path) -> None:
    dest = prepared.parent / "pre" / "splits_final.json"
    result = ensure_dataset_splits(prepared / DATASET, dest)
    assert result.status == "written"
    assert ensure_dataset_splits(prepared / DATASET, dest).status == "unchanged"
    folds = read_splits(dest)
    leaked = [dict(f) for f in folds]
    leaked[2] = {**leaked[2], "train": [*leaked[2]["train"], leaked[2][SPLITS_KEY][0]]}
    dest.write_text(json.dumps(leaked))
    with pytest.raises(OutputError, match="fold 2 has unlabelled case BraTS-GLI-00006-000 in train/val"):
        ensure_dataset_splits(prepared / DATASET, dest)
    fewer = [{**f, SPLITS_KEY: f[SPLITS_KEY][:1]} for f in folds]
    dest.write_text(json.dumps(fewer))
    with pytest.raises(OutputError, match="not the dataset's 3 unlabelled cases"):
        ensure_dataset_splits(prepared / DATASET, dest)


def test_nnunet_trainer_reads_train_and_val_without_unlabelled_cases(prepared: Path, run_cli) -> None:
    """nnU-Net's own `nnUNetTrainer.do_split` on the file segkit writes: the placeholders stay out."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    assert _splits(run_cli, prepared).code == 0
    base = prepared.parent / "pre" / DATASET
    unlabelled = json.loads((prepared / DATASET / "dataset.json").read_text())[UNLABELLED_KEY]
    every_id = sorted(p.name[:-12] for p in (prepared / DATASET / "imagesTr").glob("*_0000.nii.gz"))

    class AllCases:
        """Stands in for nnU-Net's dataset class: every preprocessed case, placeholders included."""

        def __init__(self, folder, identifiers=None, folder_with_segs_from_previous_stage=None) -> None:
            self.identifiers = every_id

    written = read_splits(base / "splits_final.json")
    for fold in range(5):
        trainer = SimpleNamespace(
            fold=fold,
            dataset_class=AllCases,
            preprocessed_dataset_folder=str(base / "nnUNetPlans_3d_fullres"),
            preprocessed_dataset_folder_base=str(base),
            folder_with_segs_from_previous_stage=None,
            print_to_log_file=lambda *args, **kwargs: None,
        )
        train, val = nnUNetTrainer.do_split(trainer)
        assert (train, val) == (written[fold]["train"], written[fold]["val"])
        assert not set(train) & set(unlabelled)
        assert not set(val) & set(unlabelled)
        assert sorted(train + val) == sorted(set(every_id) - set(unlabelled))


def test_nnunet_backend_refuses_a_supervised_fold_all_on_unlabelled_cases(prepared: Path, tmp_path: Path) -> None:
    """nnU-Net's fold ``all`` trains on every preprocessed case, placeholders included."""
    from segkit.backends.base import DatasetRef, TrainRequest
    from segkit.backends.nnunet import NnUNetBackend, NnUNetOptions

    dataset = DatasetRef(DATASET, prepared, tmp_path / "pre", tmp_path / "res")
    backend, opts = NnUNetBackend(), NnUNetOptions()
    with pytest.raises(ConfigError, match="--fold all would train on the all-zero placeholder labels of the 3"):
        backend._check_unlabelled(TrainRequest(dataset, "all", "cpu"), opts)
    backend._check_unlabelled(TrainRequest(dataset, 0, "cpu"), opts)  # 6 labelled: 5 folds are fine

    class SemiSupervised(NnUNetBackend):
        def trains_on_unlabelled(self, opts: NnUNetOptions) -> bool:
            return True

    SemiSupervised()._check_unlabelled(TrainRequest(dataset, "all", "cpu"), opts)
    stale = dataset.splits_file
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps(nnunet_splits([f"BraTS-GLI-{i:05d}-000" for i in range(9)])))
    with pytest.raises(OutputError, match="has no 'unlabeled' lists"):
        backend._check_unlabelled(TrainRequest(dataset, 0, "cpu"), opts)


def test_too_few_labelled_cases_refuse_a_fold_before_training(tmp_path: Path, run_cli) -> None:
    from segkit.backends.base import DatasetRef, TrainRequest
    from segkit.backends.nnunet import NnUNetBackend, NnUNetOptions

    out = write_cohort(tmp_path / "out", cases=4, unlabelled=2, shape=(8, 8, 8))
    raw = tmp_path / "raw"
    result = prepare(run_cli, raw, "--train-sources", out.root, "--unlabelled-sources", out.unlabelled_root)
    assert result.code == 0, result.err
    dataset = DatasetRef(DATASET, raw, tmp_path / "pre", tmp_path / "res")
    with pytest.raises(DataError, match="at least 5 labelled training cases, found 4"):
        NnUNetBackend()._check_unlabelled(TrainRequest(dataset, 0, "cpu"), NnUNetOptions())
    result = _splits(run_cli, raw)
    assert result.code == 1
    assert "--fold all" in result.err


# --------------------------------------------------------------------------- check / stats


def test_check_and_stats_on_a_synthesised_root_with_its_unlabelled_cohort(synthetic: Path, run_cli) -> None:
    result = run_cli("data", "check", synthetic, "--workers", "1", "--json")
    assert result.code == 0, result.out
    report = json.loads(result.out)
    assert report["n_cases"] == 6
    assert report["nested_roots"] == [str(synthetic / "unlabelled")]
    text = run_cli("data", "check", synthetic, "--workers", "1")
    assert "a data root of its own" in text.out
    result = run_cli("data", "check", synthetic / "unlabelled", "--workers", "1", "--json")
    assert result.code == 0, result.out
    assert json.loads(result.out)["n_cases"] == 3
    assert run_cli("data", "check", synthetic / "unlabelled", "--require-labels", "--workers", "1").code == 1
    result = run_cli("data", "stats", synthetic / "unlabelled", "--no-cache", "--workers", "1", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)["summary"]
    assert (summary["cases"], summary["labelled"], summary["unlabelled"]) == (3, 0, 3)


# --------------------------------------------------------------------------- nnU-Net for real (slow)


@pytest.mark.slow
def test_plan_preprocesses_unlabelled_cases_and_writes_the_splits(tmp_path: Path) -> None:
    """5 labelled + 2 unlabelled 32^3 cases through nnU-Net's fingerprint, planning and preprocessing."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from segkit import api
    from segkit.config import load_config

    write_cohort(tmp_path / "out", cases=5, unlabelled=2, shape=(32, 32, 32), seed=3)
    flags = {
        "nnunet.raw": tmp_path / "raw",
        "nnunet.preprocessed": tmp_path / "pre",
        "nnunet.results": tmp_path / "res",
        "prepare.train_sources": [tmp_path / "out"],
        "prepare.test_sources": [],
        "prepare.unlabelled_sources": [tmp_path / "out" / "unlabelled"],
        "prepare.workers": 1,
        "plan.num_processes": 1,
        "plan.verify_dataset_integrity": True,  # nnU-Net's own check accepts the placeholders
        "train.device": "cpu",
    }
    cfg = load_config(flags=flags)
    exported = api.prepare(cfg)
    unlabelled = list(exported.unlabelled_cases)
    assert unlabelled == ["BraTS-GLI-00005-000", "BraTS-GLI-00006-000"]
    assert api.plan(cfg).configurations == ("3d_fullres",)
    base = tmp_path / "pre" / DATASET
    folder = base / "nnUNetPlans_3d_fullres"
    for case in unlabelled:
        assert {p.name for p in folder.glob(f"{case}*")} == {f"{case}.b2nd", f"{case}.pkl", f"{case}_seg.b2nd"}
        assert (base / "gt_segmentations" / f"{case}.nii.gz").is_file()
    # nnU-Net copied dataset.json, segkit's key included
    assert unlabelled_ids(json.loads((base / "dataset.json").read_text())) == unlabelled
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    dataset = infer_dataset_class(str(folder))(str(folder))
    _, seg, _, properties = dataset.load_case(unlabelled[0])
    assert np.asarray(seg).max() <= 0  # background (0) and nnU-Net's outside-the-head (-1) only
    assert all(len(v) == 0 for v in properties["class_locations"].values())  # never a foreground patch
    labelled = [f"BraTS-GLI-{i:05d}-000" for i in range(5)]
    written = read_splits(base / "splits_final.json")
    assert [{"train": f["train"], "val": f["val"]} for f in written] == nnunet_splits(labelled)
    assert all(f[SPLITS_KEY] == unlabelled for f in written)
    for fold in (0, 3):
        trainer = SimpleNamespace(
            fold=fold,
            dataset_class=None,  # nnU-Net infers it from the preprocessed folder, as in training
            preprocessed_dataset_folder=str(folder),
            preprocessed_dataset_folder_base=str(base),
            folder_with_segs_from_previous_stage=None,
            print_to_log_file=lambda *args, **kwargs: None,
        )
        train, val = nnUNetTrainer.do_split(trainer)
        assert not (set(train) | set(val)) & set(unlabelled)
        assert (train, val) == (written[fold]["train"], written[fold]["val"])
    # a supervised --fold all would learn the placeholders: refused before any work
    with pytest.raises(ConfigError, match="placeholder labels of the 2 unlabelled case"):
        api.train(load_config(flags={**flags, "train.fold": "all", "train.backend": "nnunet"}))
    assert not (tmp_path / "res" / DATASET).exists()
    # splits from before the unlabelled cases: planning again refuses them before any work
    (base / "splits_final.json").write_text(json.dumps(nnunet_splits([*labelled, *unlabelled])))
    fingerprint = (base / "dataset_fingerprint.json").stat().st_mtime_ns
    with pytest.raises(OutputError, match="has no 'unlabeled' lists"):
        api.plan(cfg)
    assert (base / "dataset_fingerprint.json").stat().st_mtime_ns == fingerprint
