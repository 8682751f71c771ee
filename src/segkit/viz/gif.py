"""`segkit viz gif`: slice-sweep animations of one case or a whole data root.

Frames are composed for the whole sweep at once as palette indices (`render.indexed_sweep`) and written
by imageio without per-frame quantisation, which is what keeps a 155-frame 240x240 GIF with overlay
under a second. Cases run in a process pool (`segkit._parallel.map_cases`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from segkit._parallel import map_cases
from segkit.conventions import OVERLAY_ALPHA, WINDOW_PERCENTILES
from segkit.data.cases import Case, discover_cases
from segkit.errors import DataError, OutputError, did_you_mean
from segkit.progress import ProgressSink
from segkit.viz.render import Axis, OverlayStyle


@dataclass(frozen=True)
class GifJob:
    """Everything one worker needs to write one GIF (picklable)."""

    case: Case
    dest: Path
    modality: str
    axis: Axis
    step: int = 1
    overlay: bool = False
    style: OverlayStyle = "fill"
    alpha: float = OVERLAY_ALPHA
    frame_ms: int = 80
    percentiles: tuple[float, float] = WINDOW_PERCENTILES


@dataclass(frozen=True)
class GifOutcome:
    """One written GIF."""

    case_id: str
    path: Path
    frames: int
    width: int
    height: int
    seconds: float


def gif_name(case_id: str, modality: str, axis: str) -> str:
    """File name of a case's GIF: ``<case>_<modality>_<axis>.gif``."""
    return f"{case_id}_{modality}_{axis}.gif"


def write_case_gif(job: GifJob) -> GifOutcome:
    """Load one case, compose the sweep and write the GIF (runs in a worker process).

    Raises:
        DataError: A missing or unreadable input file (named in the message).
    """
    from segkit.viz.export import write_gif
    from segkit.viz.render import indexed_sweep
    from segkit.viz.volumes import load_case_volumes

    started = time.perf_counter()
    volumes = load_case_volumes(
        job.case,
        (job.modality,),
        labels="required" if job.overlay else "skip",
        percentiles=job.percentiles,
    )
    frames = indexed_sweep(
        volumes.images[job.modality],
        job.axis,
        limits=volumes.limits[job.modality],
        labels_ras=volumes.labels if job.overlay else None,
        step=job.step,
        alpha=job.alpha,
        style=job.style,
        spacing_ras=volumes.spacing_ras,
    )
    write_gif(job.dest, frames, frame_ms=job.frame_ms)
    n, h, w = frames.frames.shape
    return GifOutcome(job.case.case_id, job.dest, n, w, h, time.perf_counter() - started)


def _try_case_gif(job: GifJob) -> GifOutcome | str:
    """`write_case_gif`, returning a bad case's error message instead of raising it (one case cannot stop a batch)."""
    try:
        return write_case_gif(job)
    except DataError as err:
        return str(err)


def select_cases(root: Path, *, case: str | None = None, max_cases: int | None = None) -> list[Case]:
    """The cases of `root` to animate: one by id, or all (sorted by id, at most `max_cases`).

    Raises:
        DataError: The root is missing or empty, or the case id is not in it.
    """
    found = discover_cases([root]).cases
    if not found:
        msg = f"{root}: no case folders found"
        raise DataError(msg, hint="a data root holds one folder per case, e.g. BraTS-GLI-00001-000/")
    if case is not None:
        by_id = {c.case_id: c for c in found}
        if case not in by_id:
            msg = f"{root}: no case {case!r}{did_you_mean(case, by_id)} ({len(by_id)} cases)"
            raise DataError(msg)
        return [by_id[case]]
    chosen = sorted(found, key=lambda c: c.case_id)
    return chosen[:max_cases] if max_cases is not None else chosen


def make_gifs(
    root: Path,
    output_dir: Path,
    *,
    case: str | None = None,
    max_cases: int | None = None,
    modality: str = "t1c",
    axis: Axis = "axial",
    step: int = 1,
    overlay: bool = False,
    style: OverlayStyle = "fill",
    alpha: float = OVERLAY_ALPHA,
    frame_ms: int = 80,
    percentiles: tuple[float, float] = WINDOW_PERCENTILES,
    overwrite: bool = False,
    workers: int = 0,
    progress: ProgressSink | None = None,
) -> list[GifOutcome]:
    """Write ``<case>_<modality>_<axis>.gif`` for one case or every case of a root.

    Every input file's presence is checked before any work starts, so a missing modality (or
    segmentation with `overlay`) fails fast with the file's name. A case whose file turns out unusable
    while rendering does not stop the others: their GIFs are written, then the error is raised.

    Args:
        root: Data root.
        output_dir: Folder for the GIFs.
        case: One case id (default: all cases).
        max_cases: Cap on the number of cases.
        modality: Modality to animate.
        axis: Sweep plane.
        step: Every n-th slice.
        overlay: Draw the segmentation.
        style: Overlay style.
        alpha: Overlay opacity.
        frame_ms: Milliseconds per frame.
        percentiles: Intensity window percentiles.
        overwrite: Replace existing GIFs.
        workers: Processes (0: one per core, at most 8).
        progress: One step per case.

    Raises:
        DataError: Bad root, unknown case, missing files; an unusable file (after the other cases).
        OutputError: A GIF exists (without `overwrite`), the folder is not writable or lies in the root.
    """
    from segkit.io import ensure_writable_dir, refuse_inside
    from segkit.viz.volumes import require_files

    cases = select_cases(Path(root), case=case, max_cases=max_cases)
    for c in cases:
        require_files(c, (modality,), labels=overlay, hint="drop --overlay to animate the images alone")
    refuse_inside(Path(output_dir), [root], what="data root", hint="choose another --output-dir")
    created = _missing_folders(Path(output_dir))
    output_dir = ensure_writable_dir(Path(output_dir))
    jobs = [
        GifJob(
            c,
            output_dir / gif_name(c.case_id, modality, axis),
            modality,
            axis,
            step,
            overlay,
            style,
            alpha,
            frame_ms,
            percentiles,
        )
        for c in cases
    ]
    if not overwrite:
        for job in jobs:
            if job.dest.exists():
                msg = f"{job.dest}: exists"
                raise OutputError(msg, hint="pass --overwrite to replace existing GIFs")
    results = map_cases(_try_case_gif, jobs, workers=workers, progress=progress, description="writing GIFs")
    written = [r for r in results if isinstance(r, GifOutcome)]
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        if written:
            hint = f"{len(failed)} of {len(jobs)} case(s) failed; the other {len(written)} GIF(s) are in {output_dir}"
        else:
            # Nothing to show for the run: leave no empty folder behind either.
            _remove_empty(created)
            hint = ("the case" if len(jobs) == 1 else f"all {len(jobs)} cases") + " failed; no GIF was written"
        raise DataError(failed[0], hint=hint)
    return written


def _missing_folders(folder: Path) -> list[Path]:
    """The folders that creating `folder` would create, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this run created (deepest first), stopping at one that is not empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
