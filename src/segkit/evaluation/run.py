"""Evaluate a prediction folder against a reference: the work behind ``segkit eval``.

Order of work: pair the files by case id (`matching`), start nnU-Net's evaluator in the background
(`nnunet_check`), score every case in a process pool (`cases`), collect the cross-check, then build and
write the reports (`reports`).

Every reference case counts. A missing or unusable prediction (unreadable, other grid, bad labels,
duplicate ids) is scored as an empty prediction and marked with its reason; a reference that cannot be
used leaves its case unscored and listed as failed. With ``strict`` the first unusable file stops the
run before any report is written.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit._parallel import map_cases, resolve_workers
from segkit.config.models import EvalConfig
from segkit.errors import DataError
from segkit.evaluation.cases import CaseResult, evaluate_case
from segkit.evaluation.matching import CasePair, Matching, match_cases
from segkit.evaluation.nnunet_check import NnunetCheck, RunningCheck
from segkit.evaluation.settings import (
    labels_of,
    nnunet_cmd_of,
    protocol_regions,
    protocols_of,
    regions_of,
    validate_settings,
    voxel_keys_of,
)
from segkit.io import grid_mismatch, read_header
from segkit.metrics.protocols import Protocol
from segkit.metrics.voxel import LabelOrRegion
from segkit.progress import NullProgress, ProgressSink


@dataclass
class Evaluation:
    """The result of one evaluation run (before it is written).

    Attributes:
        gt: Reference folder.
        pred: Prediction folder.
        settings: The settings used (the ``eval`` section of the run config).
        matching: How files were paired.
        cases: One result per reference case, sorted by id (including failed ones).
        nnunet: The nnU-Net cross-check, None when skipped.
        warnings: One line per problem or note, for the manifest and the terminal.
        seconds: Wall time of the whole run.
    """

    gt: Path
    pred: Path
    settings: EvalConfig
    matching: Matching
    cases: list[CaseResult]
    nnunet: NnunetCheck | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def regions(self) -> tuple[str, ...]:
        """Lesion-wise regions scored by the first protocol, in protocol order."""
        return regions_of(self.settings)

    @property
    def protocols(self) -> tuple[Protocol, ...]:
        """The protocols scored, in the given order."""
        return protocols_of(self.settings)

    def regions_for(self, protocol: Protocol) -> tuple[str, ...]:
        """Lesion-wise regions `protocol` scored."""
        return tuple(r.name for r in protocol_regions(self.settings, protocol))

    @property
    def voxel_keys(self) -> tuple[LabelOrRegion, ...]:
        """nnU-Net voxel-metric keys scored."""
        return voxel_keys_of(self.settings)

    @property
    def scored(self) -> list[CaseResult]:
        """Cases with scores (including missing and unusable predictions scored as empty)."""
        return [c for c in self.cases if c.scored]

    @property
    def unusable(self) -> dict[str, str]:
        """Case id -> reason, for predictions that could not be used (scored as empty)."""
        return {c.case_id: c.reason or "" for c in self.cases if c.status == "unusable_prediction"}

    @property
    def failed(self) -> dict[str, str]:
        """Case id -> reason, for reference cases that could not be scored."""
        return {c.case_id: c.reason or "" for c in self.cases if not c.scored}

    def penalties(self) -> dict[str, Any]:
        """The penalties used and why, e.g. ``{"337": "182x218x182 1 mm grid"}``."""
        out: dict[str, Any] = {}
        for case in self.scored:
            if case.penalty is not None:
                out.setdefault(f"{case.penalty:g}", case.penalty_rule)
        return out


def _shown(items: list[str]) -> str:
    return ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")


def evaluate_folders(gt: Path, pred: Path, settings: EvalConfig, *, progress: ProgressSink | None = None) -> Evaluation:
    """Score every reference case in `gt` against its prediction in `pred`.

    Args:
        gt: Folder of label files or BraTS root of case folders.
        pred: Folder of prediction files.
        settings: What to compute (``gt``, ``pred`` and the report paths in it are not used here).
        progress: Receives one step per case.

    Raises:
        ConfigError: Invalid settings.
        DataError: A folder is missing, the reference is empty or no prediction belongs to a reference
            case; with ``strict``, any unusable file.
    """
    start = time.perf_counter()
    validate_settings(settings)
    progress = progress or NullProgress()
    matching = match_cases(Path(gt), Path(pred))
    warnings = list(matching.notes)
    if settings.strict:
        fatal = [f"{cid}: {reason}" for cid, reason in matching.problems.items()]
        fatal += [f"{p.case_id}: {p.pred_problem}" for p in matching.pairs if p.pred_problem]
        if fatal:
            raise DataError(fatal[0], hint=f"{len(fatal)} problem(s); run without --strict to score the rest")
    if matching.missing:
        warnings.append(
            f"{len(matching.missing)} case(s) without a prediction, scored as empty: {_shown(list(matching.missing))}"
        )
    if matching.extra:
        names = [p.name for p in matching.extra]
        warnings.append(f"{len(matching.extra)} prediction file(s) without a reference, ignored: {_shown(names)}")

    pairs = list(matching.pairs)
    processes = resolve_workers(settings.workers, len(pairs))
    nnunet_cmd = nnunet_cmd_of(settings)
    labels, keys = labels_of(settings), voxel_keys_of(settings)
    check: RunningCheck | None = None
    staged: list[CasePair] = []
    if nnunet_cmd is not None:
        # Started now so that it runs while segkit scores. From the headers alone: a reference that cannot be
        # read is left out, a prediction that cannot be used is staged as an empty one (as segkit scores it).
        staged = [s for s in (_staged_pair(p, settings.affine_tolerance) for p in pairs) if s is not None]
        check = RunningCheck(staged, labels, keys, nnunet_cmd, processes)
    try:
        results = map_cases(
            functools.partial(evaluate_case, settings=settings),
            pairs,
            workers=settings.workers,
            progress=progress,
            description="scoring cases",
        )
        bad = [r for r in results if r.status in ("unusable_prediction", "error")]
        if settings.strict and bad:
            msg = f"{bad[0].case_id}: {bad[0].reason}"
            raise DataError(msg, hint=f"{len(bad)} case(s) with an unusable file; run without --strict to score them")
        # Duplicate reference ids cannot be paired; they appear as failed cases so that no case vanishes.
        for case_id, reason in matching.problems.items():
            results.append(CaseResult(case_id, "", None, "error", reason))
        results.sort(key=lambda r: r.case_id)
        warnings += [f"{r.case_id}: {r.reason}" for r in results if r.status == "unusable_prediction"]
        warnings += [f"{r.case_id}: {r.reason}" for r in results if r.status == "error"]
        warnings += _label_warnings(settings, results)
        nnunet = None
        if check is not None and nnunet_cmd is not None:
            by_id = {r.case_id: r for r in results}
            expected = [_as_scored(p, by_id[p.case_id]) for p in pairs if by_id[p.case_id].scored]
            if expected != staged:
                # A file turned out unusable only when its voxels were read: rerun nnU-Net on what segkit scored.
                check.cancel()
                check = RunningCheck(expected, labels, keys, nnunet_cmd, processes)
            progress.start("waiting for nnU-Net's evaluator")
            nnunet = check.collect({r.case_id: r.voxel for r in results if r.voxel is not None})
            progress.finish()
            if nnunet.status != "agreed":
                warnings.append(nnunet.message)
    finally:
        if check is not None:
            check.cancel()
    return Evaluation(Path(gt), Path(pred), settings, matching, results, nnunet, warnings, time.perf_counter() - start)


def _as_scored(pair: CasePair, result: CaseResult) -> CasePair:
    """The pair as segkit scored it: an unusable prediction becomes a missing one."""
    if result.status == "unusable_prediction" or pair.pred_problem is not None:
        return CasePair(pair.case_id, pair.gt, None)
    return pair


def _staged_pair(pair: CasePair, tolerance: float) -> CasePair | None:
    """The pair for nnU-Net from a cheap header check (no voxels read); None when the reference is unreadable."""
    try:
        gt = read_header(pair.gt)
    except DataError:
        return None
    if pair.pred is None or pair.pred_problem is not None:
        return CasePair(pair.case_id, pair.gt, None)
    try:
        pred = read_header(pair.pred)
    except DataError:
        return CasePair(pair.case_id, pair.gt, None)
    if grid_mismatch(pred, gt, tolerance) is not None:
        return CasePair(pair.case_id, pair.gt, None)
    return pair


def _label_warnings(settings: EvalConfig, results: list[CaseResult]) -> list[str]:
    """One line per protocol variant whose labels never occur in the references, or that ignores labels that do."""
    present = sorted({label for r in results for label in r.labels_present})
    if not any(r.scored for r in results):
        return []
    out = []
    for protocol in protocols_of(settings):
        used = sorted({label for region in protocol.all_regions(settings) for label in region.labels})
        variant = protocol.variant(settings)
        absent = [label for label in used if label not in present]
        if absent and variant != "default":
            out.append(f"{protocol.name} ({variant}): labels {absent} occur in no reference case")
        ignored = [label for label in present if label not in used]
        if ignored:
            out.append(f"{protocol.name} ({variant}): labels {ignored} of the references belong to no region: ignored")
    return out
