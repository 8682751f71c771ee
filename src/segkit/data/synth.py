"""A synthetic BraTS post-treatment cohort: head-like anatomy with learnable tumour contrasts.

Each case is generated from ``np.random.default_rng([seed, case_number])``, so a case does not depend
on how many others are generated with it. The anatomy is defined in coordinates normalised to the
field of view, so any shape and spacing give a whole head:

* scalp, skull, extra-axial CSF, cortex (grey matter with folding), white matter, lateral ventricles;
* a tumour in one hemisphere: surrounding FLAIR hyperintensity (SNFH, label 2), an enhancing rim (ET, 3)
  around a non-enhancing core (NETC, 1), often a CSF-like resection cavity (RC, 4), sometimes
  satellites; some cases have no RC, no residual enhancing tumour, or no lesion at all;
* per-modality contrasts as on real scans (SNFH bright on t2f/t2w, ET bright on t1c, NETC dark on t1,
  RC dark on t1/t2f and bright on t2w), smooth texture, a multiplicative bias field and Gaussian noise.

Images are written as int16 (scaled by 1000), labels as uint8, with an LAS affine like the MNI grid of
the BraTS 2024 release. An unlabelled cohort (``--unlabelled K``: K more cases, numbered after the
labelled ones, written without ``-seg``) goes to its own data root ``<output>/unlabelled/``, which case
discovery of ``<output>`` skips (it holds its own manifest), so ``<output>`` stays a labelled root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from segkit.conventions import MODALITIES, SEG_SUFFIX, modality_file
from segkit.data.cases import SYNTH_MANIFEST as SYNTH_MANIFEST  # re-exported: the manifest is synth's
from segkit.errors import ConfigError, OutputError
from segkit.io import staged_dir, write_json, write_volume
from segkit.progress import NullProgress, ProgressSink

# Tissue intensities per modality (t1n, t1c, t2w, t2f), relative to white matter on T1 ~ 0.8.
_TISSUES: dict[str, tuple[float, float, float, float]] = {
    "scalp": (0.90, 0.92, 0.70, 0.62),
    "skull": (0.08, 0.09, 0.07, 0.06),
    "csf": (0.25, 0.26, 1.00, 0.12),
    "gm": (0.60, 0.62, 0.62, 0.55),
    "wm": (0.82, 0.80, 0.42, 0.45),
    "snfh": (0.55, 0.56, 0.86, 0.97),
    "et": (0.58, 1.30, 0.70, 0.80),
    "netc": (0.34, 0.36, 0.92, 0.74),
    "rc": (0.22, 0.22, 1.00, 0.16),
}
_CHANNELS = ("t1n", "t1c", "t2w", "t2f")
_INTENSITY_SCALE = 1000.0
_NOISE_SD = 0.025
_CASE_ID = "BraTS-GLI-{number:05d}-000"
UNLABELLED_ROOT = "unlabelled"
"""Sub-folder of a synthesised root that holds its unlabelled cohort (a data root of its own)."""


@dataclass(frozen=True)
class SynthCase:
    """One generated case: images per modality (float32, X Y Z), labels (uint8) and affine."""

    case_id: str
    images: dict[str, np.ndarray]
    labels: np.ndarray
    affine: np.ndarray
    features: dict[str, Any]


def synth_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """LAS affine (x flipped, as on the MNI grid) with the volume centred on the world origin."""
    affine = np.diag([-float(spacing[0]), float(spacing[1]), float(spacing[2]), 1.0])
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-scale random field varying over about `cells` cells per axis (float32)."""
    coarse = rng.standard_normal((cells + 1,) * 3).astype(np.float32)
    factors = [s / (cells + 1) for s in shape]
    field = ndimage.zoom(coarse, factors, order=1, mode="nearest", grid_mode=True)[: shape[0], : shape[1], : shape[2]]
    return field / max(float(field.std()), 1e-6)


def _ellipsoid_radius(coords: Sequence[np.ndarray], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Normalised ellipsoidal radius: < 1 inside the ellipsoid."""
    ux, uy, uz = coords
    return np.sqrt(
        ((ux - centre[0]) / radii[0]) ** 2 + ((uy - centre[1]) / radii[1]) ** 2 + ((uz - centre[2]) / radii[2]) ** 2
    )


def generate_case(
    number: int,
    *,
    shape: tuple[int, int, int] = (128, 128, 128),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> SynthCase:
    """Generate case `number` of the cohort with seed `seed` (pure: no I/O).

    Args:
        number: Case number; the id is ``BraTS-GLI-<number:05d>-000``.
        shape: Voxels along X (left-right), Y (posterior-anterior), Z (inferior-superior).
        spacing: Millimetres per voxel along X, Y, Z (recorded in the affine; the anatomy fills the field of view).
        seed: Cohort seed.
    """
    rng = np.random.default_rng([seed, number])
    axes = [np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape]
    ux, uy, uz = np.meshgrid(*axes, indexing="ij", sparse=True)
    coarse = _smooth_field(rng, shape, 4)
    fine = _smooth_field(rng, shape, 10)

    head_radii = (0.80 + 0.06 * rng.random(), 0.90 + 0.05 * rng.random(), 0.84 + 0.06 * rng.random())
    rho = _ellipsoid_radius((ux, uy, uz), (0.0, 0.0, 0.0), head_radii) * (1.0 + 0.015 * coarse)
    head = rho < 1.0
    brain_surface = 0.86
    brain = rho < brain_surface
    cortex_depth = 0.79 + 0.02 * fine  # folding: the grey/white boundary wanders
    white = rho < cortex_depth
    vent_size = 0.8 + 0.4 * rng.random()
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        r = _ellipsoid_radius(
            (ux, uy, uz), (side * 0.09, 0.02, 0.12), (0.06 * vent_size, 0.26 * vent_size, 0.12 * vent_size)
        )
        ventricles |= r < 1.0

    tissue = np.zeros(shape, dtype=np.uint8)  # index into _TISSUE_ORDER
    order = ["background", "scalp", "skull", "csf", "gm", "wm", "snfh", "et", "netc", "rc"]
    index = {name: i for i, name in enumerate(order)}
    tissue[head] = index["scalp"]
    tissue[rho < 0.95] = index["skull"]
    tissue[rho < 0.89] = index["csf"]
    tissue[brain] = index["gm"]
    tissue[white] = index["wm"]
    tissue[ventricles] = index["csf"]

    labels = np.zeros(shape, dtype=np.uint8)
    features = _add_lesions(rng, labels, (ux, uy, uz), fine, brain & ~ventricles, shape)
    for value, name in ((2, "snfh"), (3, "et"), (1, "netc"), (4, "rc")):
        tissue[labels == value] = index[name]

    table = np.zeros((len(order), 4), dtype=np.float32)
    for name, values in _TISSUES.items():
        table[index[name]] = values
    texture = 1.0 + 0.04 * fine
    bias = np.exp(
        0.12 * (rng.uniform(-1, 1) * ux + rng.uniform(-1, 1) * uy + rng.uniform(-1, 1) * uz)
        + 0.06 * rng.uniform(-1, 1) * ux * uy
    ).astype(np.float32)
    images: dict[str, np.ndarray] = {}
    for channel, modality in enumerate(_CHANNELS):
        clean = table[tissue, channel] * texture * bias
        noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(_NOISE_SD)
        image = np.where(head, np.maximum(clean + noise, 0.0), 0.0).astype(np.float32)
        images[modality] = image
    return SynthCase(_CASE_ID.format(number=number), images, labels, synth_affine(shape, spacing), features)


def _add_lesions(
    rng: np.random.Generator,
    labels: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    field: np.ndarray,
    allowed: np.ndarray,
    shape: tuple[int, int, int],
) -> dict[str, Any]:
    """Paint a post-treatment lesion (and maybe satellites) into `labels`; return what was drawn."""
    ux, uy, uz = coords
    kind = rng.choice(["full", "no_rc", "cavity_only", "none"], p=[0.55, 0.22, 0.15, 0.08])
    features: dict[str, Any] = {"kind": str(kind), "satellites": 0}
    if kind == "none":
        return features
    side = rng.choice([-1.0, 1.0])
    centre = np.array([side * rng.uniform(0.22, 0.40), rng.uniform(-0.35, 0.35), rng.uniform(-0.15, 0.40)])
    r_edema = rng.uniform(0.24, 0.38)
    r_core = rng.uniform(0.13, 0.22)

    def blob(c: np.ndarray, r: float, roughness: float = 0.18) -> np.ndarray:
        """Normalised distance to `c` (< 1 inside), with the radius modulated by the field."""
        d = np.sqrt((ux - c[0]) ** 2 + (uy - c[1]) ** 2 + (uz - c[2]) ** 2) / r
        return d / np.maximum(1.0 + roughness * field, 0.3)

    edema = blob(centre, r_edema) < 1.0
    core_centre = centre + rng.uniform(-0.3, 0.3, 3) * r_edema
    core_d = blob(core_centre, r_core, 0.12)
    labels[edema & allowed] = 2
    if kind in ("full", "no_rc"):
        # Enhancing rim of at least ~1.5 voxels around a non-enhancing core; sometimes solid enhancement.
        voxel = 2.0 / max(min(shape), 2)
        rim = max(rng.uniform(0.2, 0.4), 1.5 * voxel / r_core)
        solid = rng.random() < 0.15
        core = core_d < 1.0
        labels[core & allowed] = 3
        if not solid:
            labels[(core_d < 1.0 - rim) & allowed] = 1
    if kind in ("full", "cavity_only"):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        r_cavity = rng.uniform(0.09, 0.16)
        cavity_centre = core_centre + direction * (r_core + 0.5 * r_cavity)
        cavity = blob(cavity_centre, r_cavity, 0.1) < 1.0
        labels[cavity & allowed] = 4
    n_satellites = int(rng.choice([0, 1, 2], p=[0.6, 0.28, 0.12]))
    for _ in range(n_satellites):
        c = np.array([side * rng.uniform(0.1, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.5)])
        r = rng.uniform(0.05, 0.09)
        sat = blob(c, r, 0.1) < 1.0
        labels[(blob(c, 2.0 * r) < 1.0) & allowed & (labels == 0)] = 2
        labels[sat & allowed] = 3
    features["satellites"] = n_satellites
    features["labels"] = sorted(int(v) for v in np.unique(labels) if v)
    return features


@dataclass(frozen=True)
class SynthResult:
    """What `write_cohort` wrote.

    Attributes:
        root: The data root.
        case_ids: The cases in `root`.
        labelled: Those of them with ``-seg``.
        unlabelled_root: ``<root>/unlabelled`` when an unlabelled cohort was written, else None.
        unlabelled: The cases in `unlabelled_root` (no ``-seg``).
    """

    root: Path
    case_ids: tuple[str, ...]
    labelled: tuple[str, ...]
    unlabelled_root: Path | None = None
    unlabelled: tuple[str, ...] = ()


def write_cohort(
    output: Path,
    *,
    cases: int,
    shape: tuple[int, int, int] = (128, 128, 128),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    unlabelled: int = 0,
    without_labels: int = 0,
    start: int = 0,
    overwrite: bool = False,
    progress: ProgressSink | None = None,
    version: str = "",
) -> SynthResult:
    """Write a synthetic cohort as a BraTS data root.

    Args:
        output: The data root to create (one folder per case).
        cases: Number of cases.
        shape: Voxels along X, Y, Z.
        spacing: Millimetres per voxel.
        seed: Cohort seed; the same seed and case number always give the same case.
        unlabelled: How many more cases (numbered after the `cases`) to write, without ``-seg``, into the
            separate data root ``<output>/unlabelled/`` (for ``segkit data prepare --unlabelled-sources``).
        without_labels: How many of the `cases` (the last ones) are written without ``-seg`` in `output`
            itself (a mixed root, as some releases ship).
        start: Number of the first case, so that two cohorts can have disjoint ids.
        overwrite: Replace `output` if it exists and is not empty.
        progress: Progress sink (one step per case).
        version: segkit version recorded in the hidden manifest ``.segkit-synth.json``.

    Raises:
        ConfigError: Inconsistent counts.
        OutputError: `output` exists and is not empty (without `overwrite`), or is not writable.
    """
    if without_labels > cases:
        msg = f"{without_labels} cases without labels is more than --cases {cases}"
        raise ConfigError(msg)
    if unlabelled < 0 or without_labels < 0:
        msg = "case counts cannot be negative"
        raise ConfigError(msg)
    if start + cases + unlabelled - 1 > 99999:
        msg = f"case numbers {start}..{start + cases + unlabelled - 1} do not fit the 5-digit BraTS ids"
        raise ConfigError(msg, hint="lower --start, --cases or --unlabelled")
    if min(shape) < 8:
        msg = f"shape {tuple(shape)} is too small; every axis needs at least 8 voxels"
        raise ConfigError(msg)
    output = Path(output)
    if output.exists() and not output.is_dir():
        msg = f"{output}: exists and is a file, not a folder"
        raise OutputError(msg, hint="choose another output folder")
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            msg = f"{output}: exists and is not empty"
            raise OutputError(msg, hint="pass --overwrite to replace it, or choose another folder")
        if not (output / SYNTH_MANIFEST).is_file():
            # --overwrite deletes the folder: only ever do that to a cohort segkit itself synthesised.
            msg = f"{output}: not a synthetic cohort written by segkit; refusing to replace it"
            raise OutputError(msg, hint="choose another folder")
    progress = progress or NullProgress()
    settings: dict[str, Any] = {
        "generator": "segkit data synth",
        "version": version,
        "seed": seed,
        "shape": list(shape),
        "spacing": list(spacing),
    }
    with staged_dir(output) as stage:
        progress.start("synthesising cases", total=cases + unlabelled)
        try:
            n_labelled = cases - without_labels
            numbers = range(start, start + cases)
            ids, labelled, manifest = _write_cases(stage, numbers, n_labelled, shape, spacing, seed, progress)
            extra: tuple[str, ...] = ()
            if unlabelled:
                sub = stage / UNLABELLED_ROOT
                sub.mkdir()
                numbers = range(start + cases, start + cases + unlabelled)
                extra, _, sub_manifest = _write_cases(sub, numbers, 0, shape, spacing, seed, progress)
                write_json(sub / SYNTH_MANIFEST, {**settings, "cases": sub_manifest})
        finally:
            progress.finish()
        top: dict[str, Any] = {**settings, "cases": manifest}
        if unlabelled:
            top["unlabelled_root"] = UNLABELLED_ROOT
        write_json(stage / SYNTH_MANIFEST, top)
    return SynthResult(output, ids, labelled, output / UNLABELLED_ROOT if unlabelled else None, extra)


def _write_cases(
    folder: Path,
    numbers: range,
    n_labelled: int,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    seed: int,
    progress: ProgressSink,
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, Any]]:
    """Write cases `numbers` into `folder`, the first `n_labelled` with ``-seg``; return ids, labelled, manifest."""
    ids: list[str] = []
    labelled: list[str] = []
    manifest: dict[str, Any] = {}
    for i, number in enumerate(numbers):
        case = generate_case(number, shape=shape, spacing=spacing, seed=seed)
        case_dir = folder / case.case_id
        case_dir.mkdir()
        for modality in MODALITIES:
            image = np.round(case.images[modality] * _INTENSITY_SCALE).astype(np.int16)
            write_volume(case_dir / modality_file(case.case_id, modality), image, case.affine)
        has_label = i < n_labelled
        if has_label:
            write_volume(case_dir / modality_file(case.case_id, SEG_SUFFIX), case.labels, case.affine)
            labelled.append(case.case_id)
        ids.append(case.case_id)
        manifest[case.case_id] = {**case.features, "labelled": has_label}
        progress.advance()
    return tuple(ids), tuple(labelled), manifest
