"""Cases, folds and MONAI transform chains of the MONAI backend.

Images enter the network as (4, X, Y, Z) float32 in the bundle's channel order (``channel_order``, e.g.
t1c t1n t2w t2f), reoriented to RAS and resampled to ``spacing`` mm, z-normalised per channel over
non-zero voxels. Labels are (1, X, Y, Z) with the BraTS 2024 values 0-4, trained as a 5-class softmax.
The deterministic part of the chain is shared by training, validation and inference, which is what
lets inference invert it (`monai.transforms.Invertd`) back onto each case's own grid.

torch and monai are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.backends.monai_bundle.options import NUM_CLASSES
from segkit.conventions import MAX_LABEL, NIFTI_EXT, nnunet_image_file
from segkit.errors import DataError

if TYPE_CHECKING:
    from monai.transforms import Compose

    from segkit.backends.base import DatasetRef

AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
"""Axis labels given to Orientationd explicitly (its default changes in a future MONAI)."""


@dataclass(frozen=True)
class LabelledCase:
    """A training or validation case: the file of each modality and the label map."""

    case_id: str
    images: Mapping[str, Path]
    label: Path


def read_fold(split_file: Path, fold: int) -> tuple[list[str], list[str]]:
    """Training and validation case ids of `fold` in an nnU-Net ``splits_final.json``.

    Raises:
        DataError: Missing or malformed file (hint: ``segkit data splits``), or an out-of-range fold.
    """
    from segkit.data.splits import read_splits

    if not Path(split_file).is_file():
        msg = f"{split_file}: splits file not found"
        raise DataError(msg, hint="write nnU-Net's folds with `segkit data splits`, or pass --split-json")
    splits = read_splits(split_file)
    if not 0 <= fold < len(splits):
        msg = f"fold {fold} is out of range: {split_file} has {len(splits)} folds (0-{len(splits) - 1})"
        raise DataError(msg)
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
        DataError: The first case that is missing, lacks a modality or has no label.
    """
    if roots:
        return _from_roots(ids, roots, source)
    return _from_raw_dataset(ids, dataset, source)


def _from_roots(ids: Sequence[str], roots: Sequence[Path], source: str) -> list[LabelledCase]:
    from segkit.data.cases import discover_cases

    found = discover_cases(list(roots)).by_id()
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
            # voxel indices of every class, computed once and cached, so that random crops are cheap
            ClassesToIndicesd("label", num_classes=NUM_CLASSES, indices_postfix="_cls_indices"),
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
