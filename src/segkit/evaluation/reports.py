"""The reports of an evaluation: three JSON files, a per-case CSV and a figure, all written atomically.

* ``lesion_metrics.json``: the lesion-wise results of the (first) protocol: per case its keys per region
  and its per-lesion table, and per region and table column the mean, median, min, max and std over
  cases; each further protocol of ``--protocol`` writes ``lesion_metrics_<protocol>.json`` beside it.
* ``nnunet_metrics.json``: voxel metrics in the layout of nnU-Net's ``summary.json``.
* ``full_metrics.json``: the manifest: inputs, protocol, penalty, segkit version, timing, warnings,
  missing/extra/failed cases, the nnU-Net cross-check and summaries of both metric sets.
* ``per_case.csv``: one row per case, every protocol's per-case table columns and voxel Dice.
* ``lesion_metrics.png``: per protocol and region, lesion-wise Dice and HD95 across cases.

Every file is rendered in memory first and only then written (each through a temporary file renamed
into place), so a failure while building the reports leaves the previous reports untouched. Reports of
an earlier run in the same folder are replaced only with ``overwrite``, and then as a whole set: the old
manifest goes first, reports of the old set that the new run does not write are deleted (an old figure
after ``--no-figure``), and the new manifest is written last, so a manifest always describes the files
beside it.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from segkit.conventions import REGIONS
from segkit.errors import ConfigError, DataError, OutputError
from segkit.evaluation.run import Evaluation
from segkit.io import atomic_path, json_text, refuse_inside, write_text
from segkit.metrics.lesionwise import summary_statistics
from segkit.metrics.protocols import PROTOCOLS, Protocol
from segkit.metrics.voxel import nnunet_summary

DEFAULT_NAMES = {
    "lesion": "lesion_metrics.json",
    "nnunet": "nnunet_metrics.json",
    "combined": "full_metrics.json",
    "csv": "per_case.csv",
    "figure": "lesion_metrics.png",
}


NAME_MAX = 255
"""Longest file or folder name, in bytes, on the file systems segkit writes to."""


@dataclass(frozen=True)
class ReportPaths:
    """Where each report goes (the figure is None when disabled); `folder` is the ``--output-dir``."""

    folder: Path
    lesion: Path
    nnunet: Path
    combined: Path
    csv: Path
    figure: Path | None
    more_lesion: tuple[tuple[str, Path], ...] = ()
    """(protocol, path) of the lesion reports of the protocols after the first."""

    @classmethod
    def in_folder(
        cls,
        folder: Path,
        *,
        lesion: Path | None = None,
        nnunet: Path | None = None,
        combined: Path | None = None,
        figure: bool = True,
        protocols: tuple[str, ...] = (),
    ) -> ReportPaths:
        """Default file names in `folder`, with optional overrides for the three JSON files.

        `protocols` after the first get ``<lesion report stem>_<protocol>.json`` beside the lesion report.
        """
        folder = Path(folder)
        lesion_path = Path(lesion) if lesion else folder / DEFAULT_NAMES["lesion"]
        more = tuple((name, lesion_path.with_name(f"{lesion_path.stem}_{name}.json")) for name in protocols[1:])
        return cls(
            folder=folder,
            more_lesion=more,
            lesion=lesion_path,
            nnunet=Path(nnunet) if nnunet else folder / DEFAULT_NAMES["nnunet"],
            combined=Path(combined) if combined else folder / DEFAULT_NAMES["combined"],
            csv=folder / DEFAULT_NAMES["csv"],
            figure=folder / DEFAULT_NAMES["figure"] if figure else None,
        )

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready form."""
        return {
            "lesion_metrics": str(self.lesion),
            **{f"lesion_metrics_{name}": str(path) for name, path in self.more_lesion},
            "nnunet_metrics": str(self.nnunet),
            "full_metrics": str(self.combined),
            "per_case_csv": str(self.csv),
            "figure": None if self.figure is None else str(self.figure),
        }

    def files(self) -> list[Path]:
        """Every report file of this set, the manifest last."""
        paths = [self.lesion, *(p for _, p in self.more_lesion), self.nnunet, self.csv, self.figure, self.combined]
        return [p for p in paths if p is not None]

    def earlier(self) -> list[Path]:
        """Reports of an earlier run that this set would replace: its own paths and the default names in `folder`."""
        candidates = [*self.files(), *(self.folder / name for name in DEFAULT_NAMES.values())]
        stem = Path(DEFAULT_NAMES["lesion"]).stem
        candidates += sorted(self.folder.glob(f"{stem}_*.json")) if self.folder.is_dir() else []
        found: dict[Path, Path] = {}
        for path in candidates:
            if path.is_file() or path.is_symlink():
                found.setdefault(path.resolve(), path)
        return list(found.values())

    def check(self, reference: Path, predictions: Path, *, overwrite: bool = False) -> None:
        """Refuse report paths that would clash, before any scoring starts.

        Raises:
            ConfigError: Two reports share a path, or a name is longer than `NAME_MAX` bytes.
            OutputError: A report path is an existing folder, lies inside the reference or the prediction
                folder (symlinks resolved), or reports of an earlier run are there and `overwrite` is off.
        """
        seen: set[Path] = set()
        for path in (self.folder, *self.files()):
            long = next((part for part in Path(path).parts if len(os.fsencode(part)) > NAME_MAX), None)
            if long is not None:
                msg = f"{path}: the name {long[:40]}... is longer than {NAME_MAX} bytes"
                raise ConfigError(msg, hint="choose a shorter output name")
        for root, what in ((reference, "reference folder"), (predictions, "prediction folder")):
            refuse_inside(self.folder, [root], what=what, hint="choose an --output-dir outside GT and PRED")
        for path in self.files():
            resolved = path.resolve()
            if resolved in seen:
                msg = f"{path}: two reports would be written to the same file"
                raise ConfigError(msg, hint="give each of --lesion/--nnunet/--combined-output its own path")
            seen.add(resolved)
            if path.is_dir():
                msg = f"{path}: is a folder, not a report file"
                raise OutputError(msg, hint="name a file, e.g. reports/lesion_metrics.json, or use --output-dir")
            for root, what in ((reference, "reference folder"), (predictions, "prediction folder")):
                refuse_inside(path, [root], what=what, hint="write the reports outside GT and PRED")
        earlier = self.earlier()
        if earlier and not overwrite:
            names = ", ".join(p.name for p in earlier[:3]) + (" ..." if len(earlier) > 3 else "")
            msg = f"{self.folder}: holds the reports of an earlier segkit eval ({names})"
            raise OutputError(msg, hint="pass --overwrite to replace them, or choose another --output-dir")


def _penalty_setting(evaluation: Evaluation) -> dict[str, Any]:
    penalty = evaluation.settings.hd95_penalty
    return {"setting": penalty if penalty == "auto" else float(penalty), "used": evaluation.penalties()}


def _protocol(evaluation: Evaluation, protocol: Protocol | None) -> Protocol:
    return evaluation.protocols[0] if protocol is None else protocol


def lesion_summary(evaluation: Evaluation, protocol: Protocol | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Per region and table column stem of `protocol` (default: the first): mean, median, min, max, std, n."""
    proto = _protocol(evaluation, protocol)
    tables = [c.scores[proto.name].table for c in evaluation.scored if proto.name in c.scores]
    return {
        region: {
            stem: summary_statistics([float(t[proto.column(stem, region)]) for t in tables]) for stem in proto.stems()
        }
        for region in evaluation.regions_for(proto)
    }


def _options(evaluation: Evaluation, protocol: Protocol) -> dict[str, Any]:
    return {name: getattr(evaluation.settings, name) for name in protocol.options if name != "hd95_penalty"}


def lesion_report(evaluation: Evaluation, protocol: Protocol | None = None) -> dict[str, Any]:
    """Contents of the lesion report of `protocol` (default: the first, ``lesion_metrics.json``)."""
    proto = _protocol(evaluation, protocol)
    cases: dict[str, Any] = {}
    for case in evaluation.cases:
        entry: dict[str, Any] = {
            "status": case.status,
            "reference_file": case.gt_file or None,
            "prediction_file": case.pred_file,
        }
        if case.reason is not None:
            entry["reason"] = case.reason
        scores = case.scores.get(proto.name)
        if scores is not None:
            entry["shape"] = list(case.shape or ())
            entry["spacing_mm"] = list(case.spacing or ())
            report = dict(scores.report)
            if "hd95_penalty" in report:
                entry["hd95_penalty"] = report.pop("hd95_penalty")
            entry["metrics"] = scores.regions
            entry.update(report)
            if proto.report_table:
                entry["table"] = scores.table
        cases[case.case_id] = entry
    out: dict[str, Any] = {"protocol": proto.name, "regions": list(evaluation.regions_for(proto))}
    if "hd95_penalty" in proto.options:
        out["hd95_penalty"] = _penalty_setting(evaluation)
    out.update(_options(evaluation, proto))
    return out | {
        "summary": lesion_summary(evaluation, proto),
        "cases": cases,
        "missing_predictions": list(evaluation.matching.missing),
        "unusable_predictions": evaluation.unusable,
        "extra_predictions": [str(p) for p in evaluation.matching.extra],
        "failed": evaluation.failed,
    }


def voxel_keys(evaluation: Evaluation) -> list[str]:
    """nnU-Net keys of the evaluation, in order (``"1"``, ..., ``"(1, 2, 3)"``, ``"(1, 3)"``)."""
    return [str(k) for k in evaluation.voxel_keys]


def nnunet_report(evaluation: Evaluation) -> dict[str, Any]:
    """Contents of ``nnunet_metrics.json`` (nnU-Net's summary.json layout)."""
    cases = [(c.gt_file, c.pred_file, c.voxel) for c in evaluation.scored if c.voxel is not None]
    return nnunet_summary(cases, voxel_keys(evaluation))


def voxel_key(region: str) -> str:
    """The nnU-Net summary key of a region of `REGIONS`: ``ET`` -> ``"3"``, ``WT`` -> ``"(1, 2, 3)"``."""
    labels = REGIONS[region]
    return str(labels[0]) if len(labels) == 1 else str(labels)


def key_name(key: str) -> str:
    """A readable name for an nnU-Net key (inverse of `voxel_key`): ``"3"`` -> ``ET``, ``"(1, 2, 3)"`` -> ``WT``."""
    return next((name for name in REGIONS if voxel_key(name) == key), key)


def csv_text(evaluation: Evaluation) -> str:
    """Contents of ``per_case.csv``: one row per case (failed cases with their reason)."""
    keys = voxel_keys(evaluation)
    columns = [c for p in evaluation.protocols for c in p.columns(evaluation.regions_for(p))]
    penalty = any("hd95_penalty" in p.options for p in evaluation.protocols)
    header = ["case", "status", *(["hd95_penalty"] if penalty else []), *columns]
    header += [f"voxel_Dice_{key_name(k)}" for k in keys]
    header += ["seconds", "reason"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for case in evaluation.cases:
        row: list[Any] = [case.case_id, case.status]
        if penalty:
            row.append(case.penalty if case.penalty is not None else "")
        table = {k: v for scores in case.scores.values() for k, v in scores.table.items()}
        row += [table.get(column, "") for column in columns]
        for k in keys:
            row.append(case.voxel[k]["Dice"] if case.voxel else "")
        row += [f"{case.seconds.get('total', 0.0):.4f}", case.reason or ""]
        writer.writerow(row)
    return buffer.getvalue()


def summary(evaluation: Evaluation, paths: ReportPaths | None = None) -> dict[str, Any]:
    """The short summary printed by ``segkit eval --json`` and stored in the manifest."""
    voxel = nnunet_report(evaluation)
    return {
        "cases": {
            "reference": len(evaluation.cases),
            "scored": len(evaluation.scored),
            "missing_predictions": len(evaluation.matching.missing),
            "unusable_predictions": len(evaluation.unusable),
            "extra_predictions": len(evaluation.matching.extra),
            "failed": len(evaluation.failed),
        },
        "hd95_penalty": _penalty_setting(evaluation),
        "protocols": [p.name for p in evaluation.protocols],
        "lesion": lesion_summary(evaluation),
        "lesion_by_protocol": {p.name: lesion_summary(evaluation, p) for p in evaluation.protocols[1:]},
        "region_labels": {
            p.name: {r.name: list(r.labels) for r in p.regions(evaluation.settings)} for p in evaluation.protocols
        },
        "voxel": {"mean": voxel["mean"], "foreground_mean": voxel["foreground_mean"]},
        "nnunet_check": None if evaluation.nnunet is None else evaluation.nnunet.status,
        "outputs": None if paths is None else paths.to_dict(),
        "warnings": evaluation.warnings,
    }


def manifest(evaluation: Evaluation, paths: ReportPaths, version: str) -> dict[str, Any]:
    """Contents of ``full_metrics.json``."""
    per_case = {c.case_id: {k: round(v, 6) for k, v in c.seconds.items()} for c in evaluation.cases}
    totals = [c.seconds["total"] for c in evaluation.scored if "total" in c.seconds]
    nnunet = (
        evaluation.nnunet.to_dict()
        if evaluation.nnunet is not None
        else {"status": "skipped", "message": "nnU-Net cross-check skipped (--skip-nnunet)"}
    )
    return {
        "segkit_version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": {"reference": str(evaluation.gt), "predictions": str(evaluation.pred)},
        "protocol": evaluation.protocols[0].name,
        "protocols": {
            p.name: {"regions": list(evaluation.regions_for(p))} | _options(evaluation, p) for p in evaluation.protocols
        },
        "regions": list(evaluation.regions),
        "labels": list(dict.fromkeys(evaluation.settings.labels)),
        "omit_aggregates": evaluation.settings.omit_aggregates,
        "hd95_penalty": _penalty_setting(evaluation),
        "cases": {
            "reference": len(evaluation.cases),
            "scored": len(evaluation.scored),
            "missing_predictions": list(evaluation.matching.missing),
            "unusable_predictions": evaluation.unusable,
            "extra_predictions": [str(p) for p in evaluation.matching.extra],
            "failed": evaluation.failed,
        },
        "warnings": evaluation.warnings,
        "nnunet_check": nnunet,
        "timing": {
            "total_seconds": round(evaluation.seconds, 4),
            "median_case_seconds": round(statistics.median(totals), 4) if totals else None,
            "workers": evaluation.settings.workers,
            "per_case": per_case,
        },
        "outputs": paths.to_dict(),
        "summary": summary(evaluation),
    }


def write_reports(evaluation: Evaluation, paths: ReportPaths, *, version: str, pretty: bool = False) -> ReportPaths:
    """Render every report, then write them (each atomically).

    Raises:
        OutputError: If an output folder cannot be written.
    """
    texts = {
        paths.lesion: json_text(lesion_report(evaluation), pretty=pretty),
        **{
            path: json_text(lesion_report(evaluation, PROTOCOLS[name]), pretty=pretty)
            for name, path in paths.more_lesion
        },
        paths.nnunet: json_text(nnunet_report(evaluation), pretty=pretty),
        paths.csv: csv_text(evaluation),
    }
    figure_png = None
    if paths.figure is not None:
        from segkit.evaluation.figure import render_png

        figure_png = render_png(evaluation)
    texts[paths.combined] = json_text(manifest(evaluation, paths, version), pretty=pretty)
    # Everything is rendered: now replace the earlier set. Its manifest goes first, so that no manifest
    # claims a mix of old and new files; then the old reports this run does not write.
    new = {p.resolve() for p in paths.files()}
    earlier = paths.earlier()
    for path in sorted(earlier, key=lambda p: p.resolve() != paths.combined.resolve()):
        if path.resolve() == paths.combined.resolve() or path.resolve() not in new:
            _remove(path)
    for path, text in texts.items():
        if path == paths.combined:
            continue
        write_text(path, text)
    if paths.figure is not None and figure_png is not None:
        with atomic_path(paths.figure) as tmp:
            tmp.write_bytes(figure_png)
    # The manifest last: its presence says the other files of this run are complete.
    write_text(paths.combined, texts[paths.combined])
    return paths


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        msg = f"{path}: cannot replace the earlier report ({err.strerror or err})"
        raise OutputError(msg) from err


@dataclass(frozen=True)
class EvalResult:
    """What `segkit.api.evaluate` returns.

    Attributes:
        evaluation: All per-case results and the cross-check.
        paths: Where the reports were written.
        summary: The short summary (see `summary`).
    """

    evaluation: Evaluation
    paths: ReportPaths
    summary: dict[str, Any]


class UnscoredReferencesError(DataError):
    """Some reference cases could not be scored; the reports were written and list them.

    Attributes:
        result: The evaluation that was written.
    """

    def __init__(self, result: EvalResult) -> None:
        failed = result.evaluation.failed
        first = next(iter(failed.items()))
        msg = f"{len(failed)} reference case(s) could not be scored, first {first[0]}: {first[1]}"
        super().__init__(msg, hint=f"the reports list them: {result.paths.combined}")
        self.result = result
