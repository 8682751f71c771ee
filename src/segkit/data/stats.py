"""Cohort statistics: per-case intensity and label numbers, dataset aggregates, and a JSON cache.

Per-case work runs in a process pool (`segkit._parallel.map_cases`). Results are cached as JSON under a
cache folder (``outputs/statistics_cache/`` by default), keyed by the data roots and by the name, size and
modification time of every case file, so adding, replacing or touching a file invalidates the cache.
A file that cannot be read never aborts the run: the case records the problem and the dataset summary
lists it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segkit._parallel import map_cases
from segkit.conventions import LABELS, MODALITIES, REGIONS, SEG_SUFFIX
from segkit.data.cases import Case, discover_cases
from segkit.errors import DataError, SegkitError
from segkit.progress import ProgressSink

STATS_VERSION = 1
"""Bumped whenever the numbers or the layout change, so old cache files are not reused."""

PERCENTILES: tuple[float, ...] = (0.5, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.5)
SUMMARY_REGIONS = ("WT", "TC", "ET", "NETC", "SNFH", "RC")


def percentile_key(p: float) -> str:
    """Name of a percentile in the JSON, e.g. ``p0.5``, ``p50``."""
    return f"p{p:g}"


@dataclass(frozen=True)
class ModalityStats:
    """Intensity statistics of one image over its non-zero voxels (the head; background is 0).

    Attributes:
        voxels: Number of non-zero voxels.
        mean: Mean intensity.
        std: Standard deviation.
        min: Minimum.
        max: Maximum.
        percentiles: ``percentile_key(p)`` -> value for each p in `PERCENTILES`.
        hist_edges: Histogram bin edges (bins + 1 values) between min and max.
        hist_counts: Voxels per bin.
    """

    voxels: int
    mean: float
    std: float
    min: float
    max: float
    percentiles: dict[str, float]
    hist_edges: list[float]
    hist_counts: list[int]


@dataclass(frozen=True)
class CaseStats:
    """Statistics of one case.

    Attributes:
        case_id: The case id.
        root: The data root it was found under.
        shape: Voxels along X, Y, Z (of the first readable file), or None.
        spacing: Millimetres per voxel, or None.
        modalities: Modality -> statistics, for the images that could be read.
        labels: Label name (``NETC``...) and region name (``WT``, ``TC``) -> ``{"voxels", "ml"}``; None
            without a readable label file.
        missing: Names of expected files that are absent (modalities, and ``seg``).
        errors: One line per file that exists but could not be read.
    """

    case_id: str
    root: str
    shape: list[int] | None = None
    spacing: list[float] | None = None
    modalities: dict[str, ModalityStats] = field(default_factory=dict)
    labels: dict[str, dict[str, float]] | None = None
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseStats:
        """Inverse of ``dataclasses.asdict``."""
        mods = {m: ModalityStats(**v) for m, v in data.get("modalities", {}).items()}
        return cls(**{**data, "modalities": mods})


def modality_stats(data: np.ndarray, *, bins: int = 64) -> ModalityStats:
    """Intensity statistics of the non-zero voxels of one volume (pure).

    Args:
        data: Intensities, any shape.
        bins: Histogram bins between the minimum and maximum non-zero value.
    """
    values = np.asarray(data, dtype=np.float64).ravel()
    values = values[(values != 0) & np.isfinite(values)]
    if values.size == 0:
        nan = float("nan")
        return ModalityStats(0, nan, nan, nan, nan, {percentile_key(p): nan for p in PERCENTILES}, [], [])
    pct = np.percentile(values, PERCENTILES)
    lo, hi = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
    return ModalityStats(
        voxels=int(values.size),
        mean=float(values.mean()),
        std=float(values.std()),
        min=lo,
        max=hi,
        percentiles={percentile_key(p): float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
        hist_edges=[float(e) for e in edges],
        hist_counts=[int(c) for c in counts],
    )


def label_volumes(labels: np.ndarray, spacing: Sequence[float]) -> dict[str, dict[str, float]]:
    """Voxel counts and volumes (ml) of each BraTS label and of the WT/TC regions (pure).

    Args:
        labels: A label map (values 0..4, as `segkit.io.read_labels` returns), any shape.
        spacing: Millimetres per voxel along each axis.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=max(LABELS) + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: dict[str, dict[str, float]] = {}
    for value, name in LABELS.items():
        if value:
            out[name] = {"voxels": int(counts[value]), "ml": float(counts[value]) * voxel_ml}
    for region in ("WT", "TC"):
        n = int(sum(counts[v] for v in REGIONS[region]))
        out[region] = {"voxels": n, "ml": n * voxel_ml}
    return out


def case_statistics(case: Case, *, bins: int = 64) -> CaseStats:
    """Read one case and compute its statistics; unreadable files are recorded, not raised.

    A ``-seg`` file that is not a label map (see `segkit.io.label_problem`) is such a problem too: the case
    gets no label volumes and an error naming the file, never silently rounded or clipped numbers.
    Runs in worker processes, so it only takes picklable arguments.
    """
    from segkit.io import read_labels, read_volume

    missing = [m for m in MODALITIES if m not in case.images and m not in case.unusable]
    if case.seg is None and SEG_SUFFIX not in case.unusable:
        missing.append(SEG_SUFFIX)
    errors = [f"{path}: {why}" for path, why in case.unusable.values()]
    shape: list[int] | None = None
    spacing: list[float] | None = None
    mods: dict[str, ModalityStats] = {}
    for modality in MODALITIES:
        if modality not in case.images:
            continue
        try:
            volume = read_volume(case.images[modality])
        except SegkitError as err:
            errors.append(str(err))
            continue
        if shape is None:
            shape, spacing = list(volume.shape), [round(s, 6) for s in volume.spacing]
        elif list(volume.shape) != shape:
            errors.append(f"{volume.path}: shape {volume.shape} differs from the case's {tuple(shape)}")
            continue
        mods[modality] = modality_stats(volume.data, bins=bins)
    labels: dict[str, dict[str, float]] | None = None
    if case.seg is not None:
        try:
            seg = read_labels(case.seg)
            if shape is not None and list(seg.shape) != shape:
                errors.append(f"{seg.path}: shape {seg.shape} differs from the case's {tuple(shape)}")
            else:
                if shape is None:
                    shape, spacing = list(seg.shape), [round(s, 6) for s in seg.spacing]
                labels = label_volumes(seg.data, seg.spacing)
        except SegkitError as err:
            errors.append(str(err))
    return CaseStats(case.case_id, str(case.root), shape, spacing, mods, labels, missing, errors)


@dataclass(frozen=True)
class DatasetStats:
    """Statistics of every case under some roots, plus aggregates (see `summarise`).

    Attributes:
        roots: The data roots, as given.
        key: Cache key (roots and file fingerprints).
        created: Unix time of the computation.
        bins: Histogram bins per modality.
        cases: Per-case statistics in discovery order.
        version: `STATS_VERSION` of the code that computed it.
    """

    roots: list[str]
    key: str
    created: float
    bins: int
    cases: list[CaseStats]
    version: int = STATS_VERSION

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetStats:
        """Inverse of ``dataclasses.asdict`` (what the cache holds)."""
        return cls(
            roots=list(data["roots"]),
            key=str(data["key"]),
            created=float(data["created"]),
            bins=int(data["bins"]),
            cases=[CaseStats.from_dict(c) for c in data["cases"]],
            version=int(data.get("version", 0)),
        )


def _describe(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"n": 0}
    return {
        "n": int(arr.size),
        "min": float(arr.min()),
        "median": float(np.median(arr)),
        "mean": float(arr.mean()),
        "max": float(arr.max()),
    }


def summarise(cases: Sequence[CaseStats]) -> dict[str, Any]:
    """Dataset aggregates (pure).

    Returns:
        ``cases`` (count), ``labelled``, ``shapes`` and ``spacings`` (value -> number of cases),
        ``intensity`` (modality -> percentile -> min/median/mean/max over cases), ``label_volumes``
        (label or region -> ml over labelled cases, plus ``present``: cases where it is non-empty),
        ``problems`` (cases with missing or unreadable files).
    """
    shapes = Counter("x".join(map(str, c.shape)) for c in cases if c.shape)
    spacings = Counter(" x ".join(f"{s:g}" for s in c.spacing) for c in cases if c.spacing)
    intensity: dict[str, dict[str, dict[str, float]]] = {}
    for m in MODALITIES:
        stats = [c.modalities[m] for c in cases if m in c.modalities and c.modalities[m].voxels]
        if stats:
            keys = [percentile_key(p) for p in PERCENTILES]
            intensity[m] = {k: _describe([s.percentiles[k] for s in stats]) for k in keys}
            intensity[m]["mean"] = _describe([s.mean for s in stats])
    volumes: dict[str, dict[str, Any]] = {}
    labelled = [c for c in cases if c.labels is not None]
    for name in SUMMARY_REGIONS:
        ml = [c.labels[name]["ml"] for c in labelled if c.labels and name in c.labels]
        volumes[name] = {**_describe(ml), "present": sum(1 for v in ml if v > 0)}
    problems = [
        {"case": c.case_id, "root": c.root, "missing": list(c.missing), "errors": list(c.errors)}
        for c in cases
        if c.errors or [m for m in c.missing if m != SEG_SUFFIX]
    ]
    return {
        "cases": len(cases),
        "labelled": len(labelled),
        "unlabelled": sum(1 for c in cases if SEG_SUFFIX in c.missing),
        "shapes": dict(shapes.most_common()),
        "spacings": dict(spacings.most_common()),
        "intensity": intensity,
        "label_volumes": volumes,
        "problems": problems,
    }


# --- cache -----------------------------------------------------------------------------------------


def _roots_digest(roots: Sequence[Path]) -> str:
    names = [str(Path(r).resolve()) for r in roots]
    return hashlib.sha256(json.dumps(names).encode()).hexdigest()[:12]


def cache_key(roots: Sequence[Path], cases: Sequence[Case], *, bins: int) -> str:
    """Cache key of a set of roots: ``<roots digest>-<files digest>``.

    The files digest covers every case file's path, size and modification time (ns), the histogram
    bins and `STATS_VERSION`.
    """
    entries: list[Any] = [STATS_VERSION, bins]
    for case in sorted(cases, key=lambda c: (str(c.folder), c.case_id)):
        for path in case.files():
            try:
                st = path.stat()
                entries.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                entries.append([str(path), None, None])
        entries.append([str(case.folder.resolve()), sorted(case.missing_modalities), case.seg is None])
    files = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
    return f"{_roots_digest(roots)}-{files}"


def cache_file(cache_dir: Path, key: str) -> Path:
    """Where statistics with cache key `key` are stored."""
    return Path(cache_dir) / f"stats-{key}.json"


@dataclass(frozen=True)
class StatsResult:
    """Statistics and where they came from.

    Attributes:
        stats: The statistics.
        source: ``"computed"``, ``"cache"`` (an exact match) or ``"stale-cache"`` (an older computation
            for the same roots whose files have changed since).
        cache_path: The cache file read or written, or None.
        summary: The dataset aggregates of `stats` (`summarise`), computed once here so that callers
            only render them.
    """

    stats: DatasetStats
    source: Literal["computed", "cache", "stale-cache"]
    cache_path: Path | None = None
    summary: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary", summarise(self.stats.cases))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the statistics, their ``summary``, ``source`` and ``cache_path``."""
        return {**asdict(self.stats), "summary": self.summary, "source": self.source, "cache_path": self.cache_path}


def _discover(roots: Sequence[Path]) -> list[Case]:
    if not roots:
        msg = "no data roots given"
        raise DataError(msg, hint="pass one or more data roots, e.g. segkit data stats training_data")
    cases = list(discover_cases(list(roots)).cases)
    if not cases:
        msg = f"no case folders found in {', '.join(str(r) for r in roots)}"
        raise DataError(msg, hint="a data root holds one folder per case, e.g. BraTS-GLI-00001-000/")
    return cases


def compute_stats(
    roots: Sequence[Path], *, bins: int = 64, workers: int = 0, progress: ProgressSink | None = None
) -> DatasetStats:
    """Compute the statistics of every case under `roots` (no cache).

    Raises:
        DataError: A root is missing, or no case folder is found.
    """
    cases = _discover(roots)
    key = cache_key(roots, cases, bins=bins)
    per_case = map_cases(
        partial(case_statistics, bins=bins), cases, workers=workers, progress=progress, description="statistics"
    )
    return DatasetStats([str(r) for r in roots], key, time.time(), bins, per_case)


def load_cached(
    roots: Sequence[Path], cache_dir: Path, *, bins: int = 64, stale_ok: bool = False
) -> StatsResult | None:
    """Cached statistics for the current files of `roots`, or None.

    Args:
        roots: Data roots.
        cache_dir: Cache folder.
        bins: Histogram bins (part of the key).
        stale_ok: Fall back to the newest cache file of the same roots when the files have changed.
    """
    cases = _discover(roots)
    key = cache_key(roots, cases, bins=bins)
    exact = cache_file(cache_dir, key)
    candidates: list[tuple[Path, Literal["cache", "stale-cache"]]] = []
    if exact.is_file():
        candidates.append((exact, "cache"))
    if stale_ok:
        prefix = f"stats-{_roots_digest(roots)}-"
        older = sorted(
            (p for p in Path(cache_dir).glob(f"{prefix}*.json") if p != exact),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        candidates.extend((p, "stale-cache") for p in older)
    for path, source in candidates:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            stats = DatasetStats.from_dict(data)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged or foreign cache file is ignored and will be replaced
        if stats.version == STATS_VERSION and stats.bins == bins:
            return StatsResult(stats, source, path)
    return None


def dataset_stats(
    roots: Sequence[Path],
    *,
    cache_dir: Path | None = None,
    recompute: bool = False,
    bins: int = 64,
    workers: int = 0,
    progress: ProgressSink | None = None,
) -> StatsResult:
    """Statistics of `roots`: from the cache when the files are unchanged, else computed (and cached).

    Args:
        roots: Data roots.
        cache_dir: Cache folder, or None to neither read nor write a cache.
        recompute: Compute even when a cache entry matches (the entry is replaced).
        bins: Histogram bins.
        workers: Processes (0: one per core, at most 8).
        progress: One step per case.

    Raises:
        DataError: A root is missing, or no case folder is found.
        OutputError: The cache folder cannot be written, or is inside a data root.
    """
    from segkit.io import refuse_inside, write_json

    if cache_dir is not None:
        # A cache inside a root would be discovered as a case folder by every later command.
        refuse_inside(cache_dir, roots, what="data root", hint="pass --cache-dir outside the data roots, or --no-cache")
    if cache_dir is not None and not recompute:
        cached = load_cached(roots, cache_dir, bins=bins)
        if cached is not None:
            return cached
    stats = compute_stats(roots, bins=bins, workers=workers, progress=progress)
    if cache_dir is None:
        return StatsResult(stats, "computed")
    path = write_json(cache_file(cache_dir, stats.key), asdict(stats))
    return StatsResult(stats, "computed", path)
