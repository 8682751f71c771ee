"""Cases, folds and MONAI transform chains of the MONAI backend.

Images enter the network as (4, X, Y, Z) float32 in the bundle's channel order (``channel_order``, e.g.
t1c t1n t2w t2f), reoriented to RAS and resampled to ``spacing`` mm, z-normalised per channel over
non-zero voxels. Labels are (1, X, Y, Z) with the BraTS 2024 values 0-4, trained as a 5-class softmax.
The deterministic part of the chain is shared by training, validation and inference, which is what
lets inference invert it (`monai.transforms.Invertd`) back onto each case's own grid.

torch and monai are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.backends.monai_bundle.options import NUM_CLASSES
from segkit.conventions import MAX_LABEL, NIFTI_EXT, nnunet_image_file
from segkit.errors import ConfigError, DataError, SegkitError

if TYPE_CHECKING:
    from monai.transforms import Compose

    from segkit.backends.base import DatasetRef
    from segkit.io import Header

AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
"""Axis labels given to Orientationd explicitly (its default changes in a future MONAI)."""

MAX_SAMPLES_PER_CLASS = 10_000
"""Crop-centre candidates kept per class and case (evenly spaced over the class's voxels).

Without a bound MONAI keeps the int64 index of every voxel: ~58 MB per case on the 182x218x182 grid, in
the cache next to the image. 10,000 per class is ~400 kB and still far more centres than a run draws.
"""

CACHED_BYTES_PER_VOXEL = 4 * 4 + 4
"""A cached case holds four float32 image channels and a float32 label map per voxel."""

CACHE_MEMORY_FRACTION = 0.5
"""Share of the available RAM the automatic ``cache_rate`` fills (the rest is for the loaders and torch)."""

FALLBACK_AVAILABLE_MEMORY = 8 << 30
"""RAM assumed where the platform does not say how much is available (8 GiB)."""


@dataclass(frozen=True)
class LabelledCase:
    """A training or validation case: the file of each modality and the label map."""

    case_id: str
    images: Mapping[str, Path]
    label: Path


def read_fold(split_file: Path, fold: int) -> tuple[list[str], list[str]]:
    """Training and validation case ids of `fold` in an nnU-Net ``splits_final.json``.

    Raises:
        DataError: Missing or malformed file (hint: ``segkit data splits``).
        ConfigError: An out-of-range fold (a usage error, as with the nnU-Net backend).
    """
    from segkit.data.splits import read_splits

    if not Path(split_file).is_file():
        msg = f"{split_file}: splits file not found"
        raise DataError(msg, hint="write nnU-Net's folds with `segkit data splits`, or pass --split-json")
    splits = read_splits(split_file)
    if not 0 <= fold < len(splits):
        msg = f"fold {fold} is out of range: {split_file} has {len(splits)} folds (0-{len(splits) - 1})"
        raise ConfigError(msg)
    return list(splits[fold]["train"]), list(splits[fold]["val"])


def labelled_cases(
    ids: Sequence[str], *, roots: Sequence[Path] | None, dataset: DatasetRef, source: str
) -> list[LabelledCase]:
    """Find the files of every case in `ids`, each with four modalities and a label.

    Args:
        ids: Case ids (from the splits file).
        roots: BraTS data roots (case folders); None reads the prepared nnU-Net dataset
            (``imagesTr``/``labelsTr``, channels mapped through ``dataset.json`` ``channel_names``).
        dataset: The dataset (for the default source).
        source: Where the ids come from, for messages (e.g. ``splits_final.json fold 0``).

    Raises:
        DataError: A case id found in two data roots, or the first case that is missing, lacks a modality
            or has no label.
    """
    if roots:
        return _from_roots(ids, roots, source)
    return _from_raw_dataset(ids, dataset, source)


def _from_roots(ids: Sequence[str], roots: Sequence[Path], source: str) -> list[LabelledCase]:
    from segkit.data.cases import discover_cases

    discovery = discover_cases(list(roots))
    for case_id, folders in discovery.duplicates.items():
        # as `segkit data prepare`: which of the two would be trained on is not segkit's guess to make
        msg = f"{case_id}: duplicate case id in {folders[0]} and {folders[1]}"
        raise DataError(msg, hint="keep each case in one of the --data-root folders")
    found = discovery.by_id()
    where = ", ".join(str(r) for r in roots)
    out = []
    for case_id in ids:
        case = found.get(case_id)
        if case is None:
            msg = f"{case_id}: case named in {source} not found under the data roots ({where})"
            raise DataError(msg, hint="pass every root that holds the split's cases to --data-root")
        if case.missing_modalities:
            m = case.missing_modalities[0]
            msg = f"{case_id}: {case.expected_file(m)}: missing modality {m}"
            raise DataError(msg)
        if case.seg is None:
            msg = f"{case_id}: {case.expected_file('seg')}: missing segmentation (training cases need labels)"
            raise DataError(msg)
        out.append(LabelledCase(case_id, dict(case.images), case.seg))
    return out


def _from_raw_dataset(ids: Sequence[str], dataset: DatasetRef, source: str) -> list[LabelledCase]:
    from segkit.data.inputs import channel_modalities
    from segkit.data.nnunet_dataset import read_dataset_json

    meta = read_dataset_json(dataset.raw_dir)
    modalities = channel_modalities(meta.get("channel_names"))
    images_dir, labels_dir = dataset.raw_dir / "imagesTr", dataset.raw_dir / "labelsTr"
    out = []
    for case_id in ids:
        files = {m: images_dir / nnunet_image_file(case_id, i) for i, m in enumerate(modalities)}
        label = labels_dir / f"{case_id}{NIFTI_EXT}"
        missing = [p for p in (*files.values(), label) if not p.is_file()]
        if missing:
            msg = f"{case_id}: case named in {source} not found in {dataset.raw_dir} (no {missing[0].name})"
            raise DataError(msg, hint="re-run `segkit data prepare`, or read case folders with --data-root")
        out.append(LabelledCase(case_id, files, label))
    return out


def check_case_grid(case_id: str, images: Mapping[str, Path], *, label: Path | None = None) -> None:
    """Refuse a case whose files are not on one voxel grid, from their NIfTI headers alone.

    MONAI stacks the modalities into one image only when their shapes are equal and their affines
    ``np.allclose`` (its own test, applied here), and otherwise fails with a message that names neither
    the case nor the files. The label must lie on the images' grid within segkit's usual tolerance
    (`segkit.io.AFFINE_TOLERANCE`): both are resampled separately, so a shifted label would train on
    misplaced voxels without any error.

    Raises:
        DataError: An unreadable header, or the first file whose grid differs from the first modality's.
    """
    import numpy as np

    from segkit.io import grid_mismatch

    files = list(images.items())
    if not files:
        return
    ref_name, ref_path = files[0]
    ref = _header(ref_path)
    hint = "the four modalities and the label of a case must share one voxel grid; see `segkit data check`"
    for name, path in files[1:]:
        other = _header(path)
        if tuple(other.shape[:3]) != tuple(ref.shape[:3]) or not np.allclose(other.affine, ref.affine):
            # described at np.allclose's absolute tolerance, so that only what MONAI objects to is named
            what = grid_mismatch(other, ref, tol=1e-8) or "affines differ beyond np.allclose"
            msg = f"{case_id}: {path}: grid of {name} differs from {ref_name} ({Path(ref_path).name}): {what}"
            raise DataError(msg, hint=hint)
    if label is not None and (off := grid_mismatch(_header(label), ref)) is not None:
        msg = f"{case_id}: {label}: grid of the label differs from {ref_name} ({Path(ref_path).name}): {off}"
        raise DataError(msg, hint=hint)


def _header(path: Path) -> Header:
    """`segkit.io.read_header`, remembered while the file is unchanged (`check` runs again for every fold)."""
    from segkit.io import read_header

    try:
        stat = os.stat(path)
    except OSError:
        return read_header(Path(path))  # the one-line error for a missing or unreadable file
    return _cached_header(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1 << 15)
def _cached_header(path: str, mtime_ns: int, size: int) -> Header:
    from segkit.io import read_header

    return read_header(Path(path))


def record(
    images: Mapping[str, Path], order: Sequence[str], *, label: Path | None = None, case_id: str
) -> dict[str, Any]:
    """A MONAI data dict: ``image`` is the list of modality files in the network's channel order."""
    item: dict[str, Any] = {"image": [str(images[m]) for m in order], "case_id": case_id}
    if label is not None:
        item["label"] = str(label)
    return item


def check_label_values(label: Any) -> Any:
    """Refuse a label map with values outside the BraTS 2024 labels 0-4 (before one-hot encoding fails obscurely)."""
    import torch

    t = torch.as_tensor(label)
    if t.numel() and (float(t.min()) < 0 or float(t.max()) > MAX_LABEL or not torch.equal(t, torch.round(t))):
        values = sorted({float(v) for v in torch.unique(t)[:12]})
        name = getattr(label, "meta", {}).get("filename_or_obj", "a label map")
        msg = f"{name}: label values {values} are not the BraTS 2024 labels 0-{MAX_LABEL}"
        raise DataError(msg)
    return label


@contextlib.contextmanager
def segkit_errors(failure: str | None = None) -> Iterator[None]:
    """Surface segkit's own errors raised inside MONAI transforms, which MONAI wraps in its own.

    A `SegkitError` anywhere in the exception chain (e.g. `check_label_values` refusing a label map) is
    re-raised unwrapped. Any other error is re-raised as is, or, with `failure`, as the one-line
    ``DataError`` "<failure> (<first line of the underlying error>)": the innermost cause, not MONAI's
    "applying transform <... object at 0x...>" wrapper around it.
    """
    try:
        yield
    except SegkitError:
        raise
    except Exception as err:
        cause: BaseException | None = err
        while cause is not None:
            if isinstance(cause, SegkitError):
                raise cause from err
            cause = cause.__cause__ or cause.__context__
        if failure is None:
            raise
        root: BaseException = err
        while root.__cause__ is not None:  # MONAI wraps each transform's error, once per Compose level
            root = root.__cause__
        text = str(root).strip()
        first = text.splitlines()[0] if text else type(root).__name__
        msg = f"{failure} ({first})"
        raise DataError(msg, hint="run `segkit data check` on the input") from err


def deterministic_transforms(spacing: Sequence[float], *, with_label: bool) -> Compose:
    """Load (4 files stacked as channels), RAS, resample to `spacing` mm, z-normalise non-zero voxels.

    Output: ``image`` (4, X, Y, Z) float32 MetaTensor carrying its transform trace (for `Invertd`) and,
    `with_label`, ``label`` (1, X, Y, Z) resampled with nearest neighbour.
    """
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        Lambdad,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        Spacingd,
    )

    keys = ["image", "label"] if with_label else ["image"]
    modes = ("bilinear", "nearest") if with_label else ("bilinear",)
    chain: list[Any] = [LoadImaged(keys, image_only=True)]
    if with_label:
        chain.append(Lambdad("label", check_label_values))
    chain += [
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS", labels=AXIS_LABELS),
        Spacingd(keys, pixdim=tuple(float(s) for s in spacing), mode=modes),
        NormalizeIntensityd("image", nonzero=True, channel_wise=True),
    ]
    return Compose(chain)


def training_transforms(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    *,
    num_samples: int,
    crop_ratios: Sequence[float] | None,
) -> Compose:
    """Deterministic chain plus random crops centred by label class, flips and intensity jitter.

    Each case yields `num_samples` crops of `patch_size` voxels (image (4, *patch), label (1, *patch)).
    Everything up to the class-index computation is deterministic, so a CacheDataset caches it.
    """
    from monai.transforms import (
        ClassesToIndicesd,
        Compose,
        EnsureTyped,
        RandCropByLabelClassesd,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    keys = ["image", "label"]
    patch = tuple(int(p) for p in patch_size)
    ratios = list(crop_ratios) if crop_ratios is not None else [1.0] * NUM_CLASSES
    return Compose(
        [
            *deterministic_transforms(spacing, with_label=True).transforms,
            SpatialPadd(keys, spatial_size=patch),
            # voxel indices of every class (a bounded, evenly spaced subset), computed once and cached, so
            # that random crops are cheap
            ClassesToIndicesd(
                "label",
                num_classes=NUM_CLASSES,
                indices_postfix="_cls_indices",
                max_samples_per_class=MAX_SAMPLES_PER_CLASS,
            ),
            RandCropByLabelClassesd(
                keys,
                label_key="label",
                spatial_size=patch,
                num_classes=NUM_CLASSES,
                ratios=ratios,
                num_samples=num_samples,
                indices_key="label_cls_indices",
                warn=False,
            ),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
            RandScaleIntensityd("image", factors=0.1, prob=1.0),
            RandShiftIntensityd("image", offsets=0.1, prob=1.0),
            # batches need no transform trace; dropping it keeps collation cheap
            EnsureTyped(keys, track_meta=False),
        ]
    )


# --------------------------------------------------------------------------- cache size


def cached_case_bytes(image: Path, spacing: Sequence[float], patch_size: Sequence[int]) -> int:
    """Estimated RAM of one cached training case, from the header of one of its images.

    The case is resampled to `spacing` mm (and padded to at least `patch_size`); see
    `CACHED_BYTES_PER_VOXEL` and `MAX_SAMPLES_PER_CLASS`. About 150 MB on the 182x218x182 grid at 1 mm.
    """
    from segkit.io import read_header

    header = read_header(image)
    voxels = 1
    for n, zoom, target, patch in zip(header.shape[:3], header.spacing[:3], spacing, patch_size, strict=True):
        voxels *= max(math.ceil(n * zoom / float(target)), int(patch))
    return voxels * CACHED_BYTES_PER_VOXEL + NUM_CLASSES * MAX_SAMPLES_PER_CLASS * 8


def available_memory() -> int | None:
    """Bytes of RAM available for new allocations, or None where the platform does not say.

    Linux: ``MemAvailable`` of ``/proc/meminfo`` (free memory plus reclaimable page cache); elsewhere
    half the physical RAM (``os.sysconf``).
    """
    import os

    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES")) // 2
    except (AttributeError, ValueError, OSError):
        return None


def auto_cache_rate(n_cases: int, case_bytes: int, available: int, *, processes: int = 1) -> float:
    """The ``cache_rate`` that caches as many cases as fit in `CACHE_MEMORY_FRACTION` of `available` bytes.

    Args:
        n_cases: Cases one process caches (its training cases plus its share of the validation cases).
        case_bytes: RAM of one cached case (`cached_case_bytes`).
        available: Bytes of RAM available on this machine.
        processes: Processes on this machine that each hold a cache (``torchrun`` ranks).

    >>> auto_cache_rate(100, 150_000_000, 16_000_000_000)
    0.53
    """
    if n_cases <= 0:
        return 1.0
    fits = int(CACHE_MEMORY_FRACTION * available / max(processes, 1) // max(case_bytes, 1))
    return min(1.0, fits / n_cases)
