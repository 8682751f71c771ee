"""BraTS naming, label and channel-order conventions, in one place.

Sources: the BraTS 2024 adult glioma post-treatment release (labels 1 NETC, 2 SNFH, 3 ET, 4 RC; files
``<case>-{t1c,t1n,t2f,t2w,seg}.nii.gz``), nnU-Net's Dataset226 conversion for the channel order it uses
(0 t1n, 1 t1c, 2 t2w, 3 t2f), and the MONAI ``brats_mri_segmentation`` bundle's ``channel_def``
(T1c, T1, T2, FLAIR). Every backend maps channels explicitly through these tuples.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

MODALITIES: Final = ("t1c", "t1n", "t2f", "t2w")
"""BraTS modality file suffixes, in the order BraTS lists them."""

SEG_SUFFIX: Final = "seg"
NIFTI_EXT: Final = ".nii.gz"

NNUNET_CHANNEL_ORDER: Final = ("t1n", "t1c", "t2w", "t2f")
"""Channel ``i`` of an nnU-Net case is file ``<case>_000i.nii.gz``."""

MONAI_BUNDLE_CHANNEL_ORDER: Final = ("t1c", "t1n", "t2w", "t2f")
"""Input channel order of the MONAI ``brats_mri_segmentation`` bundle."""

LABELS: Final = MappingProxyType({0: "background", 1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"})
"""BraTS 2024 post-treatment glioma labels."""

LABEL_DESCRIPTIONS: Final = MappingProxyType(
    {
        1: "non-enhancing tumour core",
        2: "surrounding non-enhancing FLAIR hyperintensity",
        3: "enhancing tissue",
        4: "resection cavity",
    }
)

MAX_LABEL: Final = 4

REGIONS: Final = MappingProxyType(
    {
        "WT": (1, 2, 3),
        "TC": (1, 3),
        "NETC": (1,),
        "SNFH": (2,),
        "ET": (3,),
        "RC": (4,),
    }
)
"""Scored regions: whole tumour and tumour core aggregate labels; RC is in neither."""

DEFAULT_DATA_ROOTS: Final = ("training_data", "training_data_additional", "validation_data")
DEFAULT_TRAIN_ROOTS: Final = ("training_data", "training_data_additional")
DEFAULT_TEST_ROOTS: Final = ("validation_data",)


def modality_file(case_id: str, modality: str) -> str:
    """File name of one modality (or ``"seg"``) of a BraTS case, e.g. ``BraTS-GLI-00001-000-t1c.nii.gz``."""
    return f"{case_id}-{modality}{NIFTI_EXT}"


def nnunet_image_file(case_id: str, channel: int) -> str:
    """File name of one channel of an nnU-Net case, e.g. ``BraTS-GLI-00001-000_0001.nii.gz``."""
    return f"{case_id}_{channel:04d}{NIFTI_EXT}"


OVERLAY_ALPHA: Final = 0.4
"""Default opacity of the segmentation overlay in every picture (static figures, GIFs, the viewer)."""

WINDOW_PERCENTILES: Final = (0.5, 99.5)
"""Default intensity window: these percentiles of an image's non-zero voxels map to black and white."""
