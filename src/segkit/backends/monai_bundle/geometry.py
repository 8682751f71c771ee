"""The training geometry: crop size and resampling spacing, from the options, else the nnU-Net plans, else defaults.

nnU-Net stores ``patch_size`` and ``spacing`` in the axis order of the arrays its readers return, which is
the reverse of the image's voxel axes: ``SimpleITKIO`` reads ``GetArrayFromImage`` (z, y, x) with
``GetSpacing()[::-1]``, and ``NibabelIO`` transposes the array (2, 1, 0) and reverses the spacing to match
(nnunetv2 ``imageio/simpleitk_reader_writer.py``, ``imageio/nibabel_reader_writer.py``). segkit's sizes are
X Y Z, so both are reversed here. SegResNet halves the grid ``len(blocks_down) - 1`` times, so the plans'
patch size is rounded to the nearest multiple of ``2 ** (len(blocks_down) - 1)``, never below it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segkit.backends.monai_bundle.options import DEFAULT_PATCH_SIZE, DEFAULT_SPACING, MonaiOptions
from segkit.errors import DataError

PLANS_CONFIGURATION = "3d_fullres"
DEFAULT_PLANS = "nnUNetPlans"


@dataclass(frozen=True)
class Geometry:
    """Training crop (voxels) and spacing (mm), both X Y Z, and where each came from."""

    patch_size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    patch_size_source: str
    spacing_source: str

    def describe(self) -> str:
        """One line for the training log."""
        patch = " ".join(map(str, self.patch_size))
        spacing = " ".join(f"{v:g}" for v in self.spacing)
        return f"patch size {patch} ({self.patch_size_source}), spacing {spacing} mm ({self.spacing_source})"

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the training log."""
        return {
            "patch_size": list(self.patch_size),
            "patch_size_source": self.patch_size_source,
            "spacing": list(self.spacing),
            "spacing_source": self.spacing_source,
        }


def network_divisor(network_args: Mapping[str, Any]) -> int:
    """The factor SegResNet's input sizes must be multiples of: ``2 ** (len(blocks_down) - 1)``."""
    blocks = network_args.get("blocks_down") or (1, 2, 2, 4)  # MONAI's SegResNet default
    return int(2 ** (len(blocks) - 1))


def round_patch_size(size: tuple[int, ...], divisor: int) -> tuple[int, int, int]:
    """Each size rounded to the nearest multiple of `divisor` (halves up), never below `divisor`.

    >>> round_patch_size((128, 161, 111), 8)
    (128, 160, 112)
    >>> round_patch_size((3, 20, 12), 8)
    (8, 24, 16)
    """
    x, y, z = (max(divisor, int((float(v) + divisor / 2) // divisor) * divisor) for v in size)
    return x, y, z


def plans_path(preprocessed_dir: Path, plans: str | None = None) -> Path:
    """``<nnUNet_preprocessed>/<dataset>/<plans>.json`` (default ``nnUNetPlans``)."""
    return Path(preprocessed_dir) / f"{plans or DEFAULT_PLANS}.json"


def plans_geometry(path: Path) -> tuple[tuple[int, ...], tuple[float, float, float]] | None:
    """The 3d_fullres patch size (voxels) and spacing (mm) of a plans file, in X Y Z order; None without them.

    Raises:
        DataError: An unreadable plans file, or a 3d_fullres entry whose sizes are not three positive numbers.
    """
    from segkit.data.nnunet_plans import load_plans, resolve_configuration

    plans = load_plans(path)
    if PLANS_CONFIGURATION not in plans["configurations"]:
        return None
    config = resolve_configuration(plans, PLANS_CONFIGURATION, source=path)
    patch: Any = config.get("patch_size")
    spacing: Any = config.get("spacing")
    try:
        patch_xyz = tuple(int(v) for v in reversed(patch))
        spacing_xyz = tuple(float(v) for v in reversed(spacing))
    except (TypeError, ValueError) as err:
        msg = f"{path}: {PLANS_CONFIGURATION} patch_size/spacing are not lists of numbers ({err})"
        raise DataError(msg) from err
    if len(patch_xyz) != 3 or len(spacing_xyz) != 3 or min(patch_xyz) <= 0 or min(spacing_xyz) <= 0:
        msg = f"{path}: {PLANS_CONFIGURATION} needs 3 positive patch_size and spacing values, got {patch} and {spacing}"
        raise DataError(msg)
    return patch_xyz, (spacing_xyz[0], spacing_xyz[1], spacing_xyz[2])


def run_plans_identifier(config_yaml: str) -> str | None:
    """The plans identifier the run config names for nnU-Net (``backends.nnunet.plans``, else its planner's).

    The nnU-Net backend's planner table is read from its package rather than copied. None when the run
    config says nothing (or cannot be read: it was validated when the run was set up).
    """
    import yaml

    try:
        config = yaml.safe_load(config_yaml) if config_yaml else None
    except yaml.YAMLError:
        return None
    section = ((config or {}).get("backends") or {}).get("nnunet") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        return None
    if isinstance(section.get("plans"), str):
        return str(section["plans"])
    from segkit.backends.nnunet.options import PLANNER_PRESETS

    preset = PLANNER_PRESETS.get(str(section.get("planner")))
    return preset[1] if preset else None


def resolve_geometry(
    opts: MonaiOptions, preprocessed_dir: Path, network_args: Mapping[str, Any], *, plans: str | None = None
) -> Geometry:
    """The training geometry: a value the user gave wins, then the dataset's plans, then segkit's defaults.

    Args:
        opts: The options (``patch_size`` and ``spacing`` are None unless given).
        preprocessed_dir: ``<nnUNet_preprocessed>/<dataset>``.
        network_args: The SegResNet arguments (``blocks_down`` sets the divisor).
        plans: Plans identifier named by the run (default ``nnUNetPlans``).
    """
    path = plans_path(preprocessed_dir, plans)
    needed = opts.patch_size is None or opts.spacing is None
    found = plans_geometry(path) if needed and path.is_file() else None
    if opts.patch_size is not None:
        patch, patch_source = opts.patch_size, "given"
    elif found is not None:
        divisor = network_divisor(network_args)
        patch = round_patch_size(found[0], divisor)
        raw = " ".join(map(str, found[0]))
        patch_source = f"{path} {PLANS_CONFIGURATION} {raw}, rounded to multiples of {divisor}"
    else:
        patch, patch_source = DEFAULT_PATCH_SIZE, "default"
    if opts.spacing is not None:
        spacing, spacing_source = opts.spacing, "given"
    elif found is not None:
        spacing, spacing_source = found[1], f"{path} {PLANS_CONFIGURATION}"
    else:
        spacing, spacing_source = DEFAULT_SPACING, "default"
    return Geometry(patch, spacing, patch_source, spacing_source)
