"""Export BraTS case folders to an nnU-Net v2 raw dataset (``DatasetNNN_Name``).

Layout written (nnU-Net v2 "raw" format)::

    <nnUNet_raw>/DatasetNNN_Name/
        dataset.json
        imagesTr/<case>_0000.nii.gz ... _0003.nii.gz    # 0 t1n, 1 t1c, 2 t2w, 3 t2f
        labelsTr/<case>.nii.gz
        imagesTs/...                                   # test cases, when any
        labelsTs/<case>.nii.gz                         # labelled test cases, when any

Files are hard links to the raw data where the filesystem allows it, copies otherwise; nothing under a
data root is ever written, moved or deleted. The dataset is built in a hidden staging folder and moved
into place only when complete, so a failure leaves no partial dataset.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.conventions import (
    LABELS,
    NIFTI_EXT,
    NNUNET_CHANNEL_ORDER,
    SEG_SUFFIX,
    nnunet_image_file,
)
from segkit.data.cases import Case, discover_cases
from segkit.data.check import DEFAULT_AFFINE_TOLERANCE, check_case
from segkit.errors import ConfigError, DataError, OutputError
from segkit.io import link_or_copy, read_json, refuse_inside, staged_dir, write_json
from segkit.progress import NullProgress, ProgressSink

DATASET_NAME_RE = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9][A-Za-z0-9_.\-]*)$")
LABEL_CONVENTION = "brats2024-post-treatment"

REGION_LABELS = {
    "background": 0,
    "whole_tumor": [1, 2, 3],
    "tumor_core": [1, 3],
    "enhancing_tumor": 3,
    "resection_cavity": 4,
}
"""nnU-Net region-based training for BraTS 2024: one sigmoid output per (overlapping) region."""

REGIONS_CLASS_ORDER = [2, 1, 3, 4]
"""Label written for each region at inference, later ones overwriting earlier ones: WT -> 2 (SNFH),
then TC -> 1 (NETC), then ET -> 3, then RC -> 4, which restores the BraTS labels."""


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


def build_dataset_json(
    dataset: str,
    training: Sequence[str],
    test: Sequence[str],
    labelled_test: Sequence[str],
    *,
    sources: dict[str, list[str]],
    version: str,
    regions: bool = False,
) -> dict[str, Any]:
    """The ``dataset.json`` nnU-Net needs, plus a ``segkit`` section other backends read.

    The ``segkit`` section records the channel order, the label convention and the case lists, so the
    MONAI backend can find the test cases and map channels without guessing.
    """
    _, name = parse_dataset_name(dataset)
    labels: dict[str, Any] = dict(REGION_LABELS) if regions else {name: value for value, name in LABELS.items()}
    extra: dict[str, Any] = {"regions_class_order": list(REGIONS_CLASS_ORDER)} if regions else {}
    return {
        "name": name,
        "description": "BraTS post-treatment glioma cohort exported by segkit",
        "channel_names": {str(i): m for i, m in enumerate(NNUNET_CHANNEL_ORDER)},
        "labels": labels,
        **extra,
        "numTraining": len(training),
        "numTest": len(test),
        "file_ending": NIFTI_EXT,
        "segkit": {
            "version": version,
            "label_convention": LABEL_CONVENTION,
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
) -> None:
    """Raise `DataError` for the first problem among `cases` (presence always, contents if `verify`)."""
    if not verify:
        for case in cases:
            if case.missing_modalities:
                m = case.missing_modalities[0]
                msg = f"{case.case_id}: {case.expected_file(m)}: missing modality {m}"
                raise DataError(msg)
            if require_label and case.seg is None:
                msg = (
                    f"{case.case_id}: {case.expected_file(SEG_SUFFIX)}: missing segmentation ({role} cases need labels)"
                )
                raise DataError(msg)
        return
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


def prepare_dataset(
    *,
    dataset: str,
    nnunet_raw: Path,
    train_sources: Sequence[Path],
    test_sources: Sequence[Path] = (),
    clean: bool = False,
    require_test_labels: bool = False,
    verify: bool = True,
    workers: int = 0,
    progress: ProgressSink | None = None,
    version: str = "",
    regions: bool = False,
) -> PrepareResult:
    """Export BraTS case folders to ``<nnunet_raw>/<dataset>`` in nnU-Net v2 raw layout.

    Args:
        dataset: ``DatasetNNN_Name``.
        nnunet_raw: The nnU-Net raw root (the dataset folder is created inside it).
        train_sources: Roots of labelled training cases (four modalities and ``-seg`` each).
        test_sources: Roots of test cases; ``-seg`` optional unless `require_test_labels`.
        clean: Replace an existing dataset folder even if it holds cases that are no longer in the sources.
        require_test_labels: Every test case must have ``-seg`` (all go to ``labelsTs``).
        verify: Read every file and check it (readable, 3-D, finite, same geometry, labels 0-4).
        workers: Processes for the verification (0: one per core).
        progress: Progress sink.
        version: segkit version recorded in ``dataset.json``.
        regions: Write nnU-Net region labels (WT, TC, ET, RC) for region-based training.

    Raises:
        ConfigError: Bad dataset id or no training sources.
        DataError: Missing or bad files, duplicate case ids; nothing is written.
        OutputError: The dataset folder is not writable, overlaps a data root, or holds stale cases.
    """
    progress = progress or NullProgress()
    parse_dataset_name(dataset)
    if not train_sources:
        msg = "no training sources: none of the default roots exist and none were given"
        raise ConfigError(msg, hint="pass --train-sources DIR [DIR ...]")
    dest = Path(nnunet_raw) / dataset
    all_roots = [*train_sources, *test_sources]
    refuse_inside(dest, all_roots, what="data root", containing=True, hint="choose another --nnunet-raw")
    clashes = conflicting_datasets(Path(nnunet_raw), dataset)
    if clashes:
        msg = f"dataset id {dataset[:10]} is already used by {', '.join(clashes)} in {nnunet_raw}"
        raise ConfigError(msg, hint="nnU-Net finds datasets by number; choose another --dataset-id")

    train = discover_cases(train_sources)
    test = discover_cases(test_sources) if test_sources else None
    everything = [*train.cases, *(test.cases if test else ())]
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

    _validate(train.cases, require_label=True, verify=verify, workers=workers, progress=progress, role="training")
    if test is not None and test.cases:
        _validate(
            test.cases,
            require_label=require_test_labels,
            verify=verify,
            workers=workers,
            progress=progress,
            role="test",
        )

    new_ids = set(seen)
    replaced = dest.exists()
    if replaced and not clean:
        _refuse_stale(dest, new_ids)

    test_cases = list(test.cases) if test is not None else []
    labelled_test = [c for c in test_cases if c.seg is not None]
    counts = {"link": 0, "copy": 0}
    sources = {
        "train": [str(Path(r).resolve()) for r in train_sources],
        "test": [str(Path(r).resolve()) for r in test_sources],
    }
    with staged_dir(dest) as stage:
        progress.start("linking files", total=len(everything))
        try:
            for subset, cases in (("Tr", train.cases), ("Ts", test_cases)):
                if not cases:
                    continue
                images = stage / f"images{subset}"
                images.mkdir()
                labels = stage / f"labels{subset}"
                for case in cases:
                    for channel, modality in enumerate(NNUNET_CHANNEL_ORDER):
                        target = images / nnunet_image_file(case.case_id, channel)
                        counts[link_or_copy(case.images[modality], target)] += 1
                    if case.seg is not None:
                        labels.mkdir(exist_ok=True)
                        counts[link_or_copy(case.seg, labels / f"{case.case_id}{NIFTI_EXT}")] += 1
                    progress.advance()
        finally:
            progress.finish()
        meta = build_dataset_json(
            dataset,
            [c.case_id for c in train.cases],
            [c.case_id for c in test_cases],
            [c.case_id for c in labelled_test],
            sources=sources,
            version=version,
            regions=regions,
        )
        write_json(stage / "dataset.json", meta)
    return PrepareResult(
        dataset_dir=dest,
        training_cases=tuple(c.case_id for c in train.cases),
        test_cases=tuple(c.case_id for c in test_cases),
        labelled_test_cases=tuple(c.case_id for c in labelled_test),
        links=counts["link"],
        copies=counts["copy"],
        replaced=replaced,
        sources=sources,
    )


def _refuse_stale(dest: Path, new_ids: set[str]) -> None:
    """Raise unless rebuilding `dest` drops no case that an earlier run put there."""
    if not (dest / "dataset.json").is_file():
        if any(dest.iterdir()):
            msg = f"{dest}: exists and is not an nnU-Net dataset (no dataset.json); refusing to replace it"
            raise OutputError(msg, hint="remove it, choose another --dataset-id, or pass --clean")
        return
    old_ids = set(dataset_case_ids(dest, "imagesTr")) | set(dataset_case_ids(dest, "imagesTs"))
    stale = sorted(old_ids - new_ids)
    if stale:
        shown = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
        msg = f"{dest}: {len(stale)} case(s) from an earlier run are not in the sources ({shown})"
        raise OutputError(msg, hint="pass --clean to rebuild the dataset without them")
