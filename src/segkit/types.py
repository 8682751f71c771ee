"""Array aliases and the conventions behind them.

Volumes are indexed (X, Y, Z) in the image's own voxel grid, exactly as nibabel returns them; no axis is
reordered on load. Spacing is in millimetres per voxel along X, Y, Z, taken from the header zooms. An
affine maps voxel indices to world millimetres (nibabel's RAS+ world convention).
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatVolume: TypeAlias = npt.NDArray[np.floating]
"""(X, Y, Z) image intensities."""

LabelVolume: TypeAlias = npt.NDArray[np.integer]
"""(X, Y, Z) integer labels; BraTS 2024 post-treatment: 0 bg, 1 NETC, 2 SNFH, 3 ET, 4 RC."""

BoolVolume: TypeAlias = npt.NDArray[np.bool_]
"""(X, Y, Z) binary mask."""

RGBImage: TypeAlias = npt.NDArray[np.uint8]
"""(H, W, 3) image ready to display or write."""

Affine: TypeAlias = npt.NDArray[np.float64]
"""(4, 4) voxel-to-world matrix in millimetres."""

Spacing: TypeAlias = tuple[float, float, float]
"""Millimetres per voxel along X, Y, Z."""

Shape3: TypeAlias = tuple[int, int, int]
"""Voxels along X, Y, Z."""
