"""Cross-check segkit's voxel metrics against nnU-Net's own evaluator, run as a separate process.

nnU-Net's evaluator spawns a process pool (about 7 s even for one case), so it is started in the
background as soon as the cases are known and collected after segkit's own scoring. It needs reference
and prediction files with identical names in two folders, and derives the file ending from the first
reference file; segkit therefore stages links named ``<case>.nii.gz`` in a temporary folder (and an
empty prediction for every missing or unusable one, which segkit scores the same way).

Two ways to run it:

* a command (default ``nnUNetv2_evaluate_simple``), looked up next to the running Python, then on
  PATH, called as ``CMD GT PRED -l LABELS -o OUT -np N``; it scores labels only;
* ``api``: nnunetv2's ``compute_metrics_on_folder`` in a subprocess of this Python, which also scores
  the regions (WT, TC).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segkit.errors import SegkitError
from segkit.evaluation.matching import CasePair
from segkit.io import link_or_copy, split_suffix

API = "api"
"""`nnunet_cmd` value that runs nnU-Net's Python API instead of a command."""

COUNT_NAMES = ("TP", "FP", "FN", "TN", "n_pred", "n_ref")
RATIO_NAMES = ("Dice", "IoU")
RATIO_TOLERANCE = 1e-9

Status = Literal["agreed", "disagreed", "unavailable", "failed", "skipped"]

_API_SCRIPT = """
import json, sys
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
gt, pred, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
keys = [tuple(k) if isinstance(k, list) else k for k in json.loads(sys.argv[5])]
if __name__ == "__main__":
    compute_metrics_on_folder(gt, pred, out, SimpleITKIO(), ".nii.gz", keys, num_processes=n)
"""


@dataclass
class NnunetCheck:
    """Outcome of the cross-check, as recorded in the manifest.

    Attributes:
        status: ``agreed``, ``disagreed``, ``unavailable`` (command not found), ``failed`` (it ran and
            failed) or ``skipped``.
        message: One line for the user.
        command: The command line that was run.
        seconds: Its wall time.
        compared: Number of values compared.
        max_abs_difference: Largest absolute difference among compared values.
        mismatches: Up to 20 ``case / key / metric: segkit vs nnU-Net`` lines.
        keys: Label/region keys that were compared.
    """

    status: Status
    message: str
    command: list[str] = field(default_factory=list)
    seconds: float | None = None
    compared: int = 0
    max_abs_difference: float = 0.0
    mismatches: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "status": self.status,
            "message": self.message,
            "command": self.command,
            "seconds": self.seconds,
            "compared_values": self.compared,
            "max_abs_difference": self.max_abs_difference,
            "mismatches": self.mismatches,
            "keys": self.keys,
        }


def _lower_priority() -> None:
    os.nice(10)


def find_command(name: str) -> str | None:
    """Path of an executable: `name` itself if it is a path, else next to this Python, else on PATH."""
    if os.sep in name or (os.altsep and os.altsep in name):
        return name if Path(name).is_file() else None
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def _stage(pairs: Sequence[CasePair], folder: Path) -> str | None:
    """Link every case into ``folder/gt`` and ``folder/pred`` as ``<case>.nii.gz``; None or a reason to skip."""
    gt_dir, pred_dir = folder / "gt", folder / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    for pair in pairs:
        gt_suffix = split_suffix(pair.gt.name)[1]
        if pair.pred is not None and split_suffix(pair.pred.name)[1] != gt_suffix:
            return f"{pair.case_id}: reference and prediction files have different endings"
        if gt_suffix != ".nii.gz":
            return f"{pair.case_id}: nnU-Net's evaluator is run on .nii.gz files only"
        _link(pair.gt, gt_dir / f"{pair.case_id}.nii.gz")
        target = pred_dir / f"{pair.case_id}.nii.gz"
        if pair.pred is not None:
            _link(pair.pred, target)
        else:
            _write_empty_like(pair.gt, target)
    return None


def _link(src: Path, dst: Path) -> None:
    try:
        dst.symlink_to(Path(src).resolve())
    except OSError:
        link_or_copy(Path(src), dst)


def _write_empty_like(reference: Path, dest: Path) -> None:
    import numpy as np

    from segkit.io import read_header, write_volume

    header = read_header(reference)
    write_volume(dest, np.zeros(header.shape[:3], dtype=np.uint8), header.affine)


class RunningCheck:
    """nnU-Net's evaluator running in the background; `collect` waits for it and compares."""

    def __init__(
        self,
        pairs: Sequence[CasePair],
        labels: Sequence[int],
        keys: Sequence[int | tuple[int, ...]],
        command: str,
        processes: int,
    ) -> None:
        self._folder: Path | None = None
        self._process: subprocess.Popen[str] | None = None
        self._start = time.perf_counter()
        self._early: NnunetCheck | None = None
        self._api = command == API
        self._keys = [str(k) for k in keys] if self._api else [str(label) for label in labels]
        self.command: list[str] = []
        if not pairs:
            self._early = NnunetCheck("skipped", "nnU-Net cross-check skipped: no cases")
            return
        with contextlib.ExitStack() as cleanup:
            try:
                folder = Path(tempfile.mkdtemp(prefix="segkit-nnunet-"))
                cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
                reason = _stage(pairs, folder)
            except (OSError, SegkitError) as err:
                # The cross-check is optional: a staging failure is reported, never fatal.
                detail = " ".join(str(err).split()) or type(err).__name__  # one line
                self._early = NnunetCheck("failed", f"nnU-Net cross-check not run: cannot stage its files ({detail})")
                return
            if reason:
                self._early = NnunetCheck("skipped", f"nnU-Net cross-check skipped: {reason}")
                return
            cleanup.pop_all()  # staged: the folder lives until `cancel`
        self._folder = folder
        self._output = folder / "summary.json"
        gt_dir, pred_dir = str(folder / "gt"), str(folder / "pred")
        if self._api:
            keys_json = json.dumps([list(k) if isinstance(k, tuple) else k for k in keys])
            self.command = [sys.executable, "-c", _API_SCRIPT, gt_dir, pred_dir, str(self._output), str(processes)]
            self.command.append(keys_json)
        else:
            found = find_command(command)
            if found is None:
                message = (
                    f"{command} not found next to {sys.executable} or on PATH; nnU-Net cross-check not run "
                    "(install nnunetv2, pass --nnunet-cmd, or use --skip-nnunet)"
                )
                self._early = NnunetCheck("unavailable", message)
                return
            self.command = [found, gt_dir, pred_dir, "-l", *map(str, labels), "-o", str(self._output)]
            self.command += ["-np", str(processes)]
        env = dict(os.environ)
        # nnU-Net warns at import when its folders are unset; they are irrelevant to evaluation.
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            env.setdefault(var, str(folder))
        try:
            self._process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                # Low priority: it runs beside segkit's own scoring and must not slow it down.
                preexec_fn=_lower_priority if hasattr(os, "nice") else None,
            )
        except OSError as err:
            self._early = NnunetCheck("failed", f"nnU-Net evaluator could not start: {err}", self.command)

    def collect(self, segkit_cases: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> NnunetCheck:
        """Wait for the evaluator and compare its per-case numbers with segkit's.

        Args:
            segkit_cases: Case id -> segkit's voxel metrics (key -> metric -> value).
        """
        try:
            if self._early is not None:
                return self._early
            assert self._process is not None
            output, _ = self._process.communicate()
            seconds = time.perf_counter() - self._start
            if self._process.returncode != 0 or not self._output.is_file():
                tail = " | ".join(line for line in output.strip().splitlines()[-3:])
                message = f"nnU-Net evaluator failed (exit {self._process.returncode}): {tail}"
                return NnunetCheck("failed", message, self.command, seconds)
            theirs = json.loads(self._output.read_text(encoding="utf-8"))
            check = compare(segkit_cases, theirs, self._keys)
            check.command, check.seconds = self.command, seconds
            return check
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop the evaluator if it still runs and delete the staging folder."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.communicate()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def compare(
    ours: Mapping[str, Mapping[str, Mapping[str, Any]]], theirs: Mapping[str, Any], keys: Sequence[str]
) -> NnunetCheck:
    """Compare segkit's per-case voxel metrics with an nnU-Net summary (counts exact, ratios to 1e-9)."""
    compared = 0
    worst = 0.0
    mismatches: list[str] = []
    seen: set[str] = set()
    for entry in theirs.get("metric_per_case", []):
        case_id = split_suffix(Path(entry["prediction_file"]).name)[0]
        seen.add(case_id)
        if case_id not in ours:
            mismatches.append(f"{case_id}: scored by nnU-Net only")
            continue
        for key in keys:
            for name in (*COUNT_NAMES, *RATIO_NAMES):
                mine = float(ours[case_id][key][name])
                other = float(entry["metrics"][key][name])
                compared += 1
                if math.isnan(mine) and math.isnan(other):
                    continue
                diff = abs(mine - other) if not (math.isnan(mine) or math.isnan(other)) else math.inf
                worst = max(worst, diff)
                limit = RATIO_TOLERANCE if name in RATIO_NAMES else 0.0
                if diff > limit:
                    mismatches.append(f"{case_id} / {key} / {name}: segkit {mine:g} vs nnU-Net {other:g}")
    for case_id in sorted(set(ours) - seen):
        mismatches.append(f"{case_id}: not scored by nnU-Net")
    agreed = not mismatches and compared > 0
    n_cases = len(seen)
    if agreed:
        message = f"nnU-Net's evaluator agrees: {compared} values over {n_cases} cases (keys {', '.join(keys)})"
    else:
        message = f"nnU-Net's evaluator disagrees on {len(mismatches)} value(s) over {n_cases} cases"
    return NnunetCheck(
        "agreed" if agreed else "disagreed",
        message,
        compared=compared,
        max_abs_difference=worst,
        mismatches=mismatches[:20],
        keys=list(keys),
    )
