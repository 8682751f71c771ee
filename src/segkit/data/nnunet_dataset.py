"""Export BraTS case folders to an nnU-Net v2 raw dataset (``DatasetNNN_Name``).

Layout written (nnU-Net v2 "raw" format)::

    <nnUNet_raw>/DatasetNNN_Name/
        dataset.json
        imagesTr/<case>_0000.nii.gz ... _0003.nii.gz    # 0 t1n, 1 t1c, 2 t2w, 3 t2f
        labelsTr/<case>.nii.gz                         # all zero for an unlabelled case (a placeholder)
        imagesTs/...                                   # test cases, when any
        labelsTs/<case>.nii.gz                         # labelled test cases, when any

Files are hard links to the raw data where the filesystem allows it, copies otherwise; a ``.nii`` source
is compressed into a new ``.nii.gz`` and a BraTS 2021 label map is renumbered into a new file (nnU-Net
needs one file ending and consecutive labels). Nothing under a data root is ever written, moved or
deleted. The dataset is built in a hidden staging folder and moved into place only when complete, so a
failure leaves no partial dataset; a claim file per dataset number (``.segkit-DatasetNNN.claim``) makes
concurrent runs on one number fail fast instead of building two datasets nnU-Net cannot tell apart.
A marker file (``.segkit_dataset.json``) records that segkit built the folder, so that only such a folder
is ever replaced without ``--force``.

Unlabelled cases (``--unlabelled-sources``) go into ``imagesTr`` too, with a placeholder segmentation
and their ids in ``dataset.json``'s ``segkit_unlabelled`` (see `segkit.data.unlabelled`).
"""

from __future__ import annotations

import functools
import gzip
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit.conventions import (
    NIFTI_EXT,
    NNUNET_CHANNEL_ORDER,
    SEG_SUFFIX,
    nnunet_image_file,
)
from segkit.data.cases import Case, discover_cases
from segkit.data.check import DEFAULT_AFFINE_TOLERANCE, check_case
from segkit.data.layouts import BRATS2024, Layout
from segkit.data.splits import (
    NNUNET_N_FOLDS,
    NNUNET_SPLIT_SEED,
    SplitsResult,
    read_splits,
    refuse_stale_splits,
    write_splits,
)
from segkit.data.unlabelled import SPLITS_KEY, UNLABELLED_KEY, unlabelled_ids, write_placeholder_segmentation
from segkit.errors import ConfigError, DataError, OutputError
from segkit.io import (
    exclusive_claim,
    link_or_copy,
    output_dirs,
    read_json,
    read_volume,
    refuse_inside,
    staged_dir,
    write_json,
    write_volume,
)
from segkit.progress import NullProgress, ProgressSink

DATASET_NAME_RE = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9][A-Za-z0-9_.\-]*)$")
LABEL_CONVENTION = "brats2024-post-treatment"
MARKER = ".segkit_dataset.json"
"""Written into every dataset folder segkit builds; only such a folder is replaced without --force."""

REGION_LABELS = {
    "background": 0,
    "whole_tumor": [1, 2, 3],
    "tumor_core": [1, 3],
    "enhancing_tumor": 3,
    "resection_cavity": 4,
}
"""nnU-Net region-based training for BraTS 2024: one sigmoid output per (overlapping) region."""

LABELS_RC = 4
REGIONS_CLASS_ORDER = [2, 1, 3, LABELS_RC]
"""Label written for each region at inference, later ones overwriting earlier ones: WT -> 2 (SNFH),
then TC -> 1 (NETC), then ET -> 3, then RC -> 4, which restores the BraTS labels."""


def claim_file(nnunet_raw: Path, dataset: str) -> Path:
    """The file that a running `prepare_dataset` holds for the number of `dataset`."""
    number, _ = parse_dataset_name(dataset)
    return Path(nnunet_raw) / f".segkit-Dataset{number:03d}.claim"


def parse_dataset_name(name: str) -> tuple[int, str]:
    """Split ``DatasetNNN_Name`` into (NNN, Name).

    Raises:
        ConfigError: If `name` does not have that form (nnU-Net requires exactly three digits).
    """
    match = DATASET_NAME_RE.match(name)
    if not match:
        msg = f"dataset id {name!r} is not of the form DatasetNNN_Name (three digits, e.g. Dataset501_BraTSPostTx)"
        raise ConfigError(msg)
    return int(match.group(1)), match.group(2)


def conflicting_datasets(parent: Path, dataset: str) -> list[str]:
    """Other dataset folders in `parent` that use the same three-digit id as `dataset`.

    nnU-Net resolves ``-d 501`` by id alone, so two folders with one id make it fail.
    """
    number, _ = parse_dataset_name(dataset)
    if not parent.is_dir():
        return []
    prefix = f"Dataset{number:03d}_"
    return sorted(p.name for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix) and p.name != dataset)


def dataset_case_ids(dataset_dir: Path, subset: str = "imagesTr") -> list[str]:
    """Case identifiers of an nnU-Net raw dataset, derived from file names the way nnU-Net does.

    nnU-Net strips ``_XXXX<file_ending>`` from the channel files in ``imagesTr``.

    Raises:
        DataError: If the dataset folder or its ``dataset.json`` is missing.
    """
    meta = read_dataset_json(dataset_dir)
    ending = meta.get("file_ending", NIFTI_EXT)
    folder = dataset_dir / subset
    if not folder.is_dir():
        return []
    pattern = re.compile(r"^(.+)_\d{4}" + re.escape(ending) + "$")
    ids = {m.group(1) for p in folder.iterdir() if (m := pattern.match(p.name))}
    return sorted(ids)


def read_dataset_json(dataset_dir: Path) -> dict[str, Any]:
    """Read ``dataset.json`` of a raw dataset.

    Raises:
        DataError: If the dataset was not prepared (hint: ``segkit data prepare``).
    """
    path = dataset_dir / "dataset.json"
    if not path.is_file():
        msg = f"{dataset_dir}: not a prepared nnU-Net dataset (no dataset.json)"
        raise DataError(msg, hint="run `segkit data prepare` first")
    data = read_json(path)
    if not isinstance(data, dict):
        msg = f"{path}: expected a JSON object"
        raise DataError(msg)
    return data


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare_dataset` wrote."""

    dataset_dir: Path
    training_cases: tuple[str, ...]
    test_cases: tuple[str, ...]
    labelled_test_cases: tuple[str, ...]
    links: int
    copies: int
    replaced: bool
    sources: dict[str, list[str]] = field(default_factory=dict)
    converted: int = 0
    warnings: tuple[str, ...] = ()
    unlabelled_cases: tuple[str, ...] = ()


def build_dataset_json(
    dataset: str,
    training: Sequence[str],
    test: Sequence[str],
    labelled_test: Sequence[str],
    *,
    sources: dict[str, list[str]],
    version: str,
    regions: bool = False,
    layout: Layout = BRATS2024,
    unlabelled: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``dataset.json`` nnU-Net needs, plus a ``segkit`` section other backends read.

    The ``segkit`` section records the channel order, the label convention (and, for a release whose
    labels were renumbered, the map from its labels to those written) and the case lists, so the MONAI
    backend can find the test cases and map channels without guessing. `training` holds the labelled
    training cases; `unlabelled` cases are in ``imagesTr`` too (``numTraining`` counts them) and are
    listed under ``segkit_unlabelled`` (only when there are any).
    """
    _, name = parse_dataset_name(dataset)
    has_rc = "RC" in layout.labels
    if regions:
        labels: dict[str, Any] = {k: v for k, v in REGION_LABELS.items() if has_rc or k != "resection_cavity"}
        order = [v for v in REGIONS_CLASS_ORDER if has_rc or v != LABELS_RC]
        extra: dict[str, Any] = {"regions_class_order": order}
    else:
        labels, extra = dict(layout.labels), {}
    convention: dict[str, Any] = {"label_convention": LABEL_CONVENTION}
    description = "BraTS post-treatment glioma cohort exported by segkit"
    if layout is not BRATS2024:
        convention = {
            "label_convention": layout.name,
            "source_labels": {str(v): n for v, n in layout.raw_labels.items()},
            "label_map": {str(src): dst for src, dst in layout.to_segkit.items()},
        }
        renumbered = ", ".join(f"{s} -> {d}" for s, d in layout.to_segkit.items() if s != d)
        description = f"{layout.title} cohort exported by segkit (labels renumbered: {renumbered})"
    return {
        "name": name,
        "description": description,
        "channel_names": {str(i): m for i, m in enumerate(NNUNET_CHANNEL_ORDER)},
        "labels": labels,
        **extra,
        "numTraining": len(training) + len(unlabelled),
        "numTest": len(test),
        "file_ending": NIFTI_EXT,
        **({UNLABELLED_KEY: sorted(unlabelled)} if unlabelled else {}),
        "segkit": {
            "version": version,
            **convention,
            "layout": layout.name,
            "label_mode": "regions" if regions else "labels",
            "channel_order": list(NNUNET_CHANNEL_ORDER),
            "training_cases": list(training),
            "test_cases": list(test),
            "labelled_test_cases": list(labelled_test),
            "sources": sources,
        },
    }


def _validate(
    cases: Sequence[Case],
    *,
    require_label: bool,
    verify: bool,
    workers: int,
    progress: ProgressSink,
    role: str,
) -> list[str]:
    """Raise `DataError` for the first problem among `cases` (presence always, contents if `verify`).

    Returns:
        The warnings found (``case: file: message``), e.g. qform and sform that disagree.
    """
    if not verify:
        for case in cases:
            problems = case.file_problems(require_label=require_label)
            if problems:
                path, problem = problems[0]
                if problem == "missing segmentation":
                    problem += f" ({role} cases need labels)"
                msg = f"{case.case_id}: {path}: {problem}"
                raise DataError(msg)
        return []
    from segkit._parallel import map_cases

    check = functools.partial(check_case, require_label=require_label, affine_tolerance=DEFAULT_AFFINE_TOLERANCE)
    reports = map_cases(check, list(cases), workers=workers, progress=progress, description=f"checking {role} cases")
    bad = [r for r in reports if not r.ok]
    if bad:
        first = bad[0]
        n_more = sum(len(r.errors) for r in bad) - 1
        more = f" (and {n_more} more problem{'s' if n_more != 1 else ''})" if n_more else ""
        msg = f"{first.case_id}: {first.errors[0].describe()}{more}"
        raise DataError(msg, hint="run `segkit data check` on the sources for the full list")
    return [f"{r.case_id}: {i.describe()}" for r in reports for i in r.issues if i.severity == "warning"]


def prepare_dataset(
    *,
    dataset: str,
    nnunet_raw: Path,
    train_sources: Sequence[Path],
    test_sources: Sequence[Path] = (),
    unlabelled_sources: Sequence[Path] = (),
    clean: bool = False,
    require_test_labels: bool = False,
    verify: bool = True,
    workers: int = 0,
    progress: ProgressSink | None = None,
    version: str = "",
    regions: bool = False,
    force: bool = False,
    layout: Layout = BRATS2024,
) -> PrepareResult:
    """Export BraTS case folders to ``<nnunet_raw>/<dataset>`` in nnU-Net v2 raw layout.

    Args:
        dataset: ``DatasetNNN_Name``.
        nnunet_raw: The nnU-Net raw root (the dataset folder is created inside it).
        train_sources: Roots of labelled training cases (four modalities and ``-seg`` each).
        test_sources: Roots of test cases; ``-seg`` optional unless `require_test_labels`.
        unlabelled_sources: Roots of unlabelled training cases (four modalities, no ``-seg``): exported to
            ``imagesTr`` with an all-zero placeholder in ``labelsTr`` and listed in ``segkit_unlabelled``.
        clean: Replace an existing dataset folder even if it holds cases that are no longer in the sources
            (only a folder segkit built, see `force`).
        require_test_labels: Every test case must have ``-seg`` (all go to ``labelsTs``).
        verify: Read every file and check it (readable, 3-D, finite, same geometry, labels 0-4).
        workers: Processes for the verification (0: one per core).
        progress: Progress sink.
        version: segkit version recorded in ``dataset.json``.
        regions: Write nnU-Net region labels (WT, TC, ET, RC) for region-based training.
        force: Also replace a dataset folder that segkit did not build.
        layout: How the case files are named and their labels numbered (labels are renumbered to
            consecutive values when the layout says so, into new files).

    Raises:
        ConfigError: Bad dataset id, no training sources, or a folder given in two roles.
        DataError: Missing or bad files, duplicate case ids (also between labelled and unlabelled cases),
            a training case without ``-seg``, an unlabelled case with one; nothing is written.
        OutputError: The dataset folder is not writable, overlaps a data root, is a file, holds stale cases,
            was not built by segkit, or another run is preparing the same dataset number.
    """
    progress = progress or NullProgress()
    parse_dataset_name(dataset)
    if not train_sources:
        msg = "no training sources: none of the default roots exist and none were given"
        raise ConfigError(msg, hint="pass --train-sources DIR [DIR ...]")
    both = [t for t in test_sources if any(_same_folder(t, r) for r in train_sources)]
    if both:
        msg = f"{both[0]}: given both as a training and as a test source"
        raise ConfigError(msg, hint="a case is either for training or for testing; pass distinct folders")
    for role, given in (("training", train_sources), ("test", test_sources)):
        both = [u for u in unlabelled_sources if any(_same_folder(u, r) for r in given)]
        if both:
            msg = f"{both[0]}: given both as an unlabelled and as a {role} source"
            raise ConfigError(msg, hint="pass image-only cases in --unlabelled-sources only")
    nnunet_raw = Path(nnunet_raw)
    dest = nnunet_raw / dataset
    all_roots = [*train_sources, *test_sources, *unlabelled_sources]
    refuse_inside(dest, all_roots, what="data root", containing=True, hint="choose another --nnunet-raw")
    if dest.exists() and not dest.is_dir():
        msg = f"{dest}: exists and is a file, not a dataset folder"
        raise OutputError(msg, hint="remove it or choose another --dataset-id")

    train = discover_cases(train_sources, layout=layout)
    test = discover_cases(test_sources, layout=layout) if test_sources else None
    extra = discover_cases(unlabelled_sources, layout=layout).cases if unlabelled_sources else ()
    everything = [*train.cases, *(test.cases if test else ()), *extra]
    seen: dict[str, Path] = {}
    for case in everything:
        if case.case_id in seen:
            msg = f"{case.case_id}: duplicate case id in {seen[case.case_id]} and {case.folder}"
            raise DataError(msg)
        seen[case.case_id] = case.folder
    if not train.cases:
        roots = ", ".join(str(r) for r in train_sources)
        msg = f"no case folders found in the training sources ({roots})"
        raise DataError(msg)
    if unlabelled_sources and not extra:
        roots = ", ".join(str(r) for r in unlabelled_sources)
        msg = f"no case folders found in the unlabelled sources ({roots})"
        raise DataError(msg)
    _refuse_mixed_roles(train.cases, extra)

    with (
        output_dirs([nnunet_raw]),
        exclusive_claim(
            claim_file(nnunet_raw, dataset),
            what=f"dataset number {dataset[7:10]}",
            hint="wait for the other `segkit data prepare` to finish, or choose another --dataset-id",
        ),
    ):
        # Checked while holding the number's claim, so that two runs cannot both pass these checks.
        clashes = conflicting_datasets(nnunet_raw, dataset)
        if clashes:
            msg = f"dataset id {dataset[:10]} is already used by {', '.join(clashes)} in {nnunet_raw}"
            raise ConfigError(msg, hint="nnU-Net finds datasets by number; choose another --dataset-id")
        replaced = dest.exists()
        if replaced and not force:
            _refuse_foreign(dest)
            if not clean:
                _refuse_stale(dest, set(seen))
        warnings = _validate(
            train.cases, require_label=True, verify=verify, workers=workers, progress=progress, role="training"
        )
        if test is not None and test.cases:
            warnings += _validate(
                test.cases,
                require_label=require_test_labels,
                verify=verify,
                workers=workers,
                progress=progress,
                role="test",
            )
        if extra:
            warnings += _validate(
                extra, require_label=False, verify=verify, workers=workers, progress=progress, role="unlabelled"
            )
        return _build(
            dest,
            dataset,
            train.cases,
            list(test.cases) if test is not None else [],
            unlabelled_cases=extra,
            train_sources=train_sources,
            test_sources=test_sources,
            unlabelled_sources=unlabelled_sources,
            version=version,
            regions=regions,
            layout=layout,
            replaced=replaced,
            warnings=warnings,
            progress=progress,
        )


def _refuse_mixed_roles(train: Sequence[Case], unlabelled: Sequence[Case]) -> None:
    """Raise for a labelled training case without ``-seg`` or an unlabelled case with one (cheap: names only).

    An unlabelled case's placeholder would silently replace its real labels, and a training case without
    labels would make nnU-Net fail at preprocessing; both are refused before anything is written.
    """
    for case in train:
        # A case with other problems (a missing modality, another layout) gets those reported by `_validate`.
        if case.seg is None and SEG_SUFFIX not in case.unusable and not case.file_problems():
            msg = f"{case.case_id}: {case.expected_file(SEG_SUFFIX)}: missing segmentation (training cases need labels)"
            raise DataError(msg, hint="pass image-only cases with --unlabelled-sources")
    for case in unlabelled:
        seg = case.seg or case.unusable.get(SEG_SUFFIX, (None, ""))[0]
        if seg is not None:
            msg = f"{case.case_id}: {seg}: an unlabelled source case has a segmentation"
            raise DataError(msg, hint="pass labelled cases with --train-sources, or remove the file from the copy")


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _build(
    dest: Path,
    dataset: str,
    train_cases: Sequence[Case],
    test_cases: Sequence[Case],
    *,
    unlabelled_cases: Sequence[Case] = (),
    train_sources: Sequence[Path],
    test_sources: Sequence[Path],
    unlabelled_sources: Sequence[Path] = (),
    version: str,
    regions: bool,
    layout: Layout,
    replaced: bool,
    warnings: list[str],
    progress: ProgressSink,
) -> PrepareResult:
    """Write the dataset into a staging folder and put it in place of `dest`."""
    labelled_test = [c for c in test_cases if c.seg is not None]
    counts = {"link": 0, "copy": 0, "converted": 0, "placeholder": 0}
    sources = {
        "train": [str(Path(r).resolve()) for r in train_sources],
        "test": [str(Path(r).resolve()) for r in test_sources],
    }
    if unlabelled_sources:
        sources["unlabelled"] = [str(Path(r).resolve()) for r in unlabelled_sources]
    with staged_dir(dest) as stage:
        progress.start("linking files", total=len(train_cases) + len(test_cases) + len(unlabelled_cases))
        try:
            groups = (("Tr", train_cases), ("Tr", unlabelled_cases), ("Ts", test_cases))
            for subset, cases in groups:
                if not cases:
                    continue
                images = stage / f"images{subset}"
                images.mkdir(exist_ok=True)
                labels = stage / f"labels{subset}"
                for case in cases:
                    for channel, modality in enumerate(NNUNET_CHANNEL_ORDER):
                        target = images / nnunet_image_file(case.case_id, channel)
                        counts[_export_image(case.images[modality], target)] += 1
                    if case.seg is not None:
                        labels.mkdir(exist_ok=True)
                        counts[_export_labels(case.seg, labels / f"{case.case_id}{NIFTI_EXT}", layout)] += 1
                    elif cases is unlabelled_cases:
                        # nnU-Net loads a label file for every imagesTr case; this one is never trained on
                        # (splits_final.json keeps it out of train/val).
                        labels.mkdir(exist_ok=True)
                        first = case.images[NNUNET_CHANNEL_ORDER[0]]
                        write_placeholder_segmentation(first, labels / f"{case.case_id}{NIFTI_EXT}")
                        counts["placeholder"] += 1
                    progress.advance()
        finally:
            progress.finish()
        meta = build_dataset_json(
            dataset,
            [c.case_id for c in train_cases],
            [c.case_id for c in test_cases],
            [c.case_id for c in labelled_test],
            sources=sources,
            version=version,
            regions=regions,
            layout=layout,
            unlabelled=[c.case_id for c in unlabelled_cases],
        )
        write_json(stage / "dataset.json", meta)
        write_json(stage / MARKER, {"generator": "segkit data prepare", "version": version, "dataset": dataset})
    return PrepareResult(
        dataset_dir=dest,
        training_cases=tuple(c.case_id for c in train_cases),
        test_cases=tuple(c.case_id for c in test_cases),
        labelled_test_cases=tuple(c.case_id for c in labelled_test),
        links=counts["link"],
        copies=counts["copy"],
        replaced=replaced,
        sources=sources,
        converted=counts["converted"],
        warnings=tuple(warnings),
        unlabelled_cases=tuple(sorted(c.case_id for c in unlabelled_cases)),
    )


def _export_image(src: Path, dst: Path) -> str:
    """Link (or copy) a ``.nii.gz`` source; compress a ``.nii`` one into a new file (nnU-Net wants one ending)."""
    if src.name.endswith(NIFTI_EXT):
        return link_or_copy(src, dst)
    # gzip of the uncompressed file is exactly a .nii.gz; level 1 as nibabel writes, since speed matters here.
    with open(src, "rb") as fin, gzip.open(dst, "wb", compresslevel=1) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return "converted"


def _export_labels(src: Path, dst: Path, layout: Layout) -> str:
    """Export one label map, renumbered into a new file when `layout` renumbers its labels."""
    if not any(a != b for a, b in layout.to_segkit.items()):
        return _export_image(src, dst)
    volume = read_volume(src)
    lookup = np.zeros(max(layout.raw_labels) + 1, dtype=np.uint8)
    for source, target in layout.to_segkit.items():
        lookup[source] = target
    values = volume.data.astype(np.int64, copy=False)
    if values.size and (values.min() < 0 or values.max() >= lookup.size):
        msg = f"{src}: labels outside {sorted(layout.raw_labels)}"
        raise DataError(msg)
    write_volume(dst, lookup[values], volume.affine)
    return "converted"


def _is_segkit_dataset(dest: Path) -> bool:
    """Whether segkit built `dest`: its marker, or (datasets from before the marker) segkit's dataset.json section."""
    if (dest / MARKER).is_file():
        return True
    try:
        meta = read_json(dest / "dataset.json")
    except DataError:
        return False
    return isinstance(meta, dict) and isinstance(meta.get("segkit"), dict)


def _refuse_foreign(dest: Path) -> None:
    """Raise unless `dest` is empty or a dataset folder that segkit built (replacing deletes its files)."""
    if _is_segkit_dataset(dest) or not any(dest.iterdir()):
        return
    if not (dest / "dataset.json").is_file():
        msg = f"{dest}: exists and is not an nnU-Net dataset (no dataset.json); refusing to replace it"
    else:
        msg = f"{dest}: an nnU-Net dataset that segkit did not build (no {MARKER}); refusing to replace it"
    raise OutputError(msg, hint="remove it, choose another --dataset-id, or pass --force to replace it (deletes it)")


def _refuse_stale(dest: Path, new_ids: set[str]) -> None:
    """Raise unless rebuilding `dest` drops no case that an earlier run put there."""
    if not (dest / "dataset.json").is_file():
        return
    old_ids = set(dataset_case_ids(dest, "imagesTr")) | set(dataset_case_ids(dest, "imagesTs"))
    stale = sorted(old_ids - new_ids)
    if stale:
        shown = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
        msg = f"{dest}: {len(stale)} case(s) from an earlier run are not in the sources ({shown})"
        raise OutputError(msg, hint="pass --clean to rebuild the dataset without them")


def write_dataset_splits(
    dataset_dir: Path,
    dest: Path,
    *,
    n_folds: int = NNUNET_N_FOLDS,
    seed: int = NNUNET_SPLIT_SEED,
    overwrite: bool = False,
) -> SplitsResult:
    """Write the folds of a prepared raw dataset: nnU-Net's, of its labelled cases when it has unlabelled ones.

    The ids are those of ``imagesTr`` (what nnU-Net's trainer would split); the unlabelled ones come from
    ``dataset.json`` and go into each fold's ``"unlabeled"`` list instead of ``train``/``val``.

    Raises:
        DataError: The dataset is not prepared, or has too few (labelled) cases for the folds.
        OutputError: `dest` holds other folds (see `write_splits`).
    """
    ids = dataset_case_ids(dataset_dir)
    unlabelled = unlabelled_ids(read_dataset_json(dataset_dir))
    missing = sorted(set(unlabelled) - set(ids))
    if missing:
        msg = f"{dataset_dir}: dataset.json lists unlabelled case {missing[0]}, which is not in imagesTr"
        raise DataError(msg, hint="re-run `segkit data prepare`")
    return write_splits(ids, dest, unlabelled=unlabelled, n_folds=n_folds, seed=seed, overwrite=overwrite)


def check_dataset_splits(dataset_dir: Path, dest: Path) -> list[str]:
    """Refuse an existing splits file that does not keep the dataset's unlabelled cases out of train/val.

    Returns:
        The dataset's unlabelled case ids ([]: nothing to check).

    Raises:
        DataError: `dest` is not a splits file.
        OutputError: `dest` has no ``"unlabeled"`` lists, puts an unlabelled case into ``train``/``val``,
            or lists other unlabelled cases than the dataset has (it was written for an earlier export).
    """
    unlabelled = unlabelled_ids(read_dataset_json(dataset_dir))
    if not unlabelled or not (dest.exists() or dest.is_symlink()):
        return unlabelled
    existing = read_splits(dest)
    if not any(SPLITS_KEY in split for split in existing):
        refuse_stale_splits(dest, len(unlabelled))
    hint = "rewrite it with `segkit data splits --overwrite`"
    for fold, split in enumerate(existing):
        leaked = sorted((set(split["train"]) | set(split["val"])) & set(unlabelled))
        if leaked:
            msg = f"{dest}: fold {fold} has unlabelled case {leaked[0]} in train/val"
            raise OutputError(msg, hint=hint)
        if sorted(split.get(SPLITS_KEY, [])) != unlabelled:
            msg = f"{dest}: fold {fold}'s {SPLITS_KEY!r} list is not the dataset's {len(unlabelled)} unlabelled cases"
            raise OutputError(msg, hint=hint)
    return unlabelled


def ensure_dataset_splits(
    dataset_dir: Path,
    dest: Path,
    *,
    n_folds: int = NNUNET_N_FOLDS,
    seed: int = NNUNET_SPLIT_SEED,
) -> SplitsResult:
    """Keep a usable splits file (`check_dataset_splits`), else write the dataset's (`write_dataset_splits`).

    This is what runs before nnU-Net could write its own file over every preprocessed case, placeholders
    included.

    Raises:
        DataError: The dataset is not prepared, or has too few (labelled) cases for the folds.
        OutputError: An existing file that `check_dataset_splits` refuses.
    """
    check_dataset_splits(dataset_dir, dest)
    if dest.is_file():
        return SplitsResult(dest, read_splits(dest), "unchanged")
    return write_dataset_splits(dataset_dir, dest, n_folds=n_folds, seed=seed)
