"""Evaluate a prediction folder against a reference: the work behind ``segkit eval``.

Order of work: pair the files by case id (`matching`), start nnU-Net's evaluator in the background
(`nnunet_check`), score every case in a process pool (`cases`), collect the cross-check, then build and
write the reports (`reports`). Problems with single cases (unreadable files, other grids, bad labels,
duplicate ids) are recorded and the other cases are still scored, unless ``strict`` is set, in which
case the first such problem stops the run before any report is written.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit._parallel import map_cases, resolve_workers
from segkit.errors import ConfigError, DataError
from segkit.evaluation.cases import CaseOptions, CaseResult, evaluate_case
from segkit.evaluation.matching import CasePair, Matching, match_cases
from segkit.evaluation.nnunet_check import NnunetCheck, RunningCheck
from segkit.io import grid_mismatch, read_header
from segkit.metrics.lesionwise import PROTOCOLS
from segkit.metrics.voxel import LabelOrRegion
from segkit.progress import NullProgress, ProgressSink

AGGREGATES = ("WT", "TC")


@dataclass(frozen=True)
class EvalSettings:
    """Everything `evaluate_folders` needs besides the two folders (mirrors ``EvalConfig``).

    Attributes:
        protocol: Lesion-wise protocol (``brats2024``).
        labels: Labels whose single-label regions are scored (1 NETC, 2 SNFH, 3 ET, 4 RC).
        omit_aggregates: Skip the WT and TC aggregate regions.
        penalty: HD95 penalty in mm, or None for the automatic, grid-dependent value.
        affine_tolerance: Largest allowed difference between reference and prediction affines.
        workers: Processes (0: one per core, at most 8).
        strict: Any problem with a case is fatal.
        nnunet_cmd: nnU-Net evaluator command (or ``api``), None to skip the cross-check.
    """

    protocol: str = "brats2024"
    labels: tuple[int, ...] = (1, 2, 3, 4)
    omit_aggregates: bool = False
    penalty: float | None = None
    affine_tolerance: float = 1e-4
    workers: int = 0
    strict: bool = False
    nnunet_cmd: str | None = "nnUNetv2_evaluate_simple"

    def regions(self) -> tuple[str, ...]:
        """Lesion-wise regions in protocol order: the aggregates (unless omitted) and the chosen labels."""
        protocol = PROTOCOLS[self.protocol]
        out = []
        for rule in protocol.regions:
            if rule.name in AGGREGATES:
                if not self.omit_aggregates:
                    out.append(rule.name)
            elif len(rule.labels) == 1 and rule.labels[0] in self.labels:
                out.append(rule.name)
        return tuple(out)

    def voxel_keys(self) -> tuple[LabelOrRegion, ...]:
        """nnU-Net keys: each label, then the aggregate regions as label tuples (unless omitted)."""
        keys: list[LabelOrRegion] = list(self.labels)
        if not self.omit_aggregates:
            protocol = PROTOCOLS[self.protocol]
            keys += [protocol.region(name).labels for name in AGGREGATES]
        return tuple(keys)


@dataclass
class Evaluation:
    """The result of one evaluation run (before it is written).

    Attributes:
        gt: Reference folder.
        pred: Prediction folder.
        settings: The settings used.
        matching: How files were paired.
        cases: One result per reference case, sorted by id (including failed ones).
        nnunet: The nnU-Net cross-check, None when skipped.
        warnings: One line per problem or note, for the manifest and the terminal.
        seconds: Wall time of the whole run.
    """

    gt: Path
    pred: Path
    settings: EvalSettings
    matching: Matching
    cases: list[CaseResult]
    nnunet: NnunetCheck | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def scored(self) -> list[CaseResult]:
        """Cases with scores (including missing predictions scored as empty)."""
        return [c for c in self.cases if c.scored]

    @property
    def failed(self) -> dict[str, str]:
        """Case id -> reason, for cases that could not be scored."""
        return {c.case_id: c.reason or "" for c in self.cases if not c.scored}

    def penalties(self) -> dict[str, Any]:
        """The penalties used and why, e.g. ``{"337": "182x218x182 1 mm grid"}``."""
        out: dict[str, Any] = {}
        for case in self.scored:
            out.setdefault(f"{case.penalty:g}", case.penalty_rule)
        return out


def validate_settings(settings: EvalSettings) -> None:
    """Reject settings that cannot work, before any file is read.

    Raises:
        ConfigError: Unknown protocol, labels outside the protocol, nothing left to score.
    """
    if settings.protocol not in PROTOCOLS:
        msg = f"unknown protocol {settings.protocol!r}; available: {', '.join(PROTOCOLS)}"
        raise ConfigError(msg)
    protocol = PROTOCOLS[settings.protocol]
    valid = sorted({r.labels[0] for r in protocol.regions if len(r.labels) == 1})
    bad = [label for label in settings.labels if label not in valid]
    if bad:
        msg = f"labels {bad} are not scored by protocol {settings.protocol} (labels: {valid})"
        raise ConfigError(msg)
    if not settings.regions():
        msg = "nothing to score: no labels and aggregates omitted"
        raise ConfigError(msg)


def evaluate_folders(
    gt: Path, pred: Path, settings: EvalSettings, *, progress: ProgressSink | None = None
) -> Evaluation:
    """Score every reference case in `gt` against its prediction in `pred`.

    Args:
        gt: Folder of label files or BraTS root of case folders.
        pred: Folder of prediction files.
        settings: What to compute.
        progress: Receives one step per case.

    Raises:
        ConfigError: Invalid settings.
        DataError: A folder is missing, the reference is empty, no prediction belongs to a reference case or
            no case could be scored; with ``strict``, any problem with a case.
    """
    start = time.perf_counter()
    validate_settings(settings)
    progress = progress or NullProgress()
    matching = match_cases(Path(gt), Path(pred))
    warnings = list(matching.notes)
    for case_id, reason in matching.problems.items():
        warnings.append(f"{case_id}: {reason}")
    if matching.missing:
        shown = ", ".join(matching.missing[:5]) + (" ..." if len(matching.missing) > 5 else "")
        warnings.append(f"{len(matching.missing)} case(s) without a prediction, scored as empty: {shown}")
    if matching.extra:
        shown = ", ".join(p.name for p in matching.extra[:5]) + (" ..." if len(matching.extra) > 5 else "")
        warnings.append(f"{len(matching.extra)} prediction file(s) without a reference, ignored: {shown}")
    if settings.strict and matching.problems:
        fatal = [f"{cid}: {reason}" for cid, reason in matching.problems.items()]
        raise DataError(fatal[0], hint=f"{len(fatal)} problem(s); run without --strict to score the rest")

    options = CaseOptions(
        protocol=settings.protocol,
        regions=settings.regions(),
        voxel_keys=settings.voxel_keys(),
        penalty=settings.penalty,
        affine_tolerance=settings.affine_tolerance,
    )
    pairs = list(matching.pairs)
    processes = resolve_workers(settings.workers, len(pairs))
    check: RunningCheck | None = None
    staged: list[CasePair] = []
    if settings.nnunet_cmd is not None:
        # Started now so that it runs while segkit scores; cases whose headers already disagree are left out
        # (nnU-Net's evaluator would crash on them).
        staged = [p for p in pairs if _headers_agree(p, settings.affine_tolerance)]
        check = RunningCheck(staged, settings.labels, options.voxel_keys, settings.nnunet_cmd, processes)
    try:
        results = map_cases(
            functools.partial(evaluate_case, options=options),
            pairs,
            workers=settings.workers,
            progress=progress,
            description="scoring cases",
        )
        failed = [r for r in results if not r.scored]
        if settings.strict and failed:
            msg = f"{failed[0].case_id}: {failed[0].reason}"
            raise DataError(
                msg,
                hint=f"{len(failed)} case(s) failed; run without --strict to score the rest",
            )
        # Duplicate ids cannot be paired; they appear as failed cases so that no case vanishes.
        for case_id, reason in matching.problems.items():
            results.append(CaseResult(case_id, "", None, "error", reason))
        results.sort(key=lambda r: r.case_id)
        if not any(r.scored for r in results):
            # Reports of nothing but NaN would pass for a result in a pipeline; this is a failed run.
            msg = f"no case could be scored: {results[0].case_id}: {results[0].reason}"
            raise DataError(msg, hint=f"all {len(results)} case(s) failed to score")
        warnings += [f"{r.case_id}: {r.reason}" for r in failed]
        nnunet = None
        if check is not None and settings.nnunet_cmd is not None:
            scored_ids = {r.case_id for r in results if r.scored}
            if any(p.case_id not in scored_ids for p in staged):
                # A staged case turned out unreadable: rerun nnU-Net on the scored cases only.
                check.cancel()
                good = [p for p in pairs if p.case_id in scored_ids]
                check = RunningCheck(good, settings.labels, options.voxel_keys, settings.nnunet_cmd, processes)
            progress.start("waiting for nnU-Net's evaluator")
            nnunet = check.collect({r.case_id: r.voxel for r in results if r.voxel is not None})
            progress.finish()
            if nnunet.status != "agreed":
                warnings.append(nnunet.message)
    finally:
        if check is not None:
            check.cancel()
    return Evaluation(Path(gt), Path(pred), settings, matching, results, nnunet, warnings, time.perf_counter() - start)


def _headers_agree(pair: CasePair, tolerance: float) -> bool:
    """Whether both headers are readable and describe the same grid (a cheap pre-check, no voxels read)."""
    if pair.pred is None:
        return _header_ok(pair.gt)
    try:
        gt, pred = read_header(pair.gt), read_header(pair.pred)
    except DataError:
        return False
    return grid_mismatch(pred, gt, tolerance) is None


def _header_ok(path: Path) -> bool:
    """Whether the NIfTI header of `path` can be read."""
    try:
        read_header(path)
    except DataError:
        return False
    return True
