"""panoptica 2.1.7 configured as ``brats-evaluation`` 0.0.10's bundled configs: the oracle of segkit's brats2025.

Runs in its own environment (``uv run --project tests/oracle_panoptica python run_oracle.py JOBS OUT``):
panoptica pins numpy<2.3, cc3d<4 and rich<14, which segkit's own lock must not carry.

JOBS is a JSON list of ``{"id", "gt", "pred", "task"}`` (NIfTI paths; ``pred`` null for a missing
prediction, scored as all background like segkit does); OUT receives ``{id: {"seconds": s, "result":
{region: to_dict(True)}}}``. The evaluator is built here from the facts of the package's configs (the
issue lists them): connected-component instances (cc3d), maximum bipartite matching on DSC at 1e-6,
instance and global metrics DSC, NSD and HD95, the zero-TP edge cases, and the task's groups. With
``--time N`` each case is scored N more times and the median wall and CPU times are reported (file
reading included).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from panoptica import ConnectedComponentsInstanceApproximator, InputType, MaxBipartiteMatching, Panoptica_Evaluator
from panoptica.metrics import Metric
from panoptica.utils.edge_case_handling import EdgeCaseHandler, EdgeCaseResult, MetricZeroTPEdgeCaseHandling
from panoptica.utils.label_group import LabelGroup, LabelMergeGroup
from panoptica.utils.segmentation_class import SegmentationClassGroups

GROUPS: dict[str, list[tuple[str, list[int], bool]]] = {
    "gli": [
        ("netc", [1], False),
        ("snfh", [2], False),
        ("et", [3], False),
        ("rc", [4], False),
        ("tc", [1, 3], True),
        ("wt", [1, 2, 3], True),
    ],
    "mets": [("et", [3], False), ("rc", [4], False), ("tc", [1, 3], True), ("wt", [1, 2, 3], True)],
    "ped": [
        ("et", [1], False),
        ("netc", [2], False),
        ("cc", [3], False),
        ("ed", [4], False),
        ("tc", [1, 2, 3], True),
        ("wt", [1, 2, 3, 4], True),
    ],
    "MenRT": [("gtv", [1], False)],
    "MenPre": [("et", [3], False), ("tc", [1, 3], True), ("wt", [1, 2, 3], True)],
    "GoAT": [("et", [3], False), ("tc", [1, 3], True), ("wt", [1, 2, 3], True)],
}


def evaluator(task: str) -> Panoptica_Evaluator:
    groups = {
        name: (LabelMergeGroup(labels) if merge else LabelGroup(labels[0])) for name, labels, merge in GROUPS[task]
    }
    overlap = MetricZeroTPEdgeCaseHandling(
        empty_prediction_result=EdgeCaseResult.ZERO,
        empty_reference_result=EdgeCaseResult.ZERO,
        no_instances_result=EdgeCaseResult.NAN,
        default_result=EdgeCaseResult.ZERO,
    )
    distance = MetricZeroTPEdgeCaseHandling(
        empty_prediction_result=EdgeCaseResult.INF,
        empty_reference_result=EdgeCaseResult.INF,
        no_instances_result=EdgeCaseResult.NAN,
        default_result=EdgeCaseResult.INF,
    )
    edge = EdgeCaseHandler(
        listmetric_zeroTP_handling={Metric.DSC: overlap, Metric.NSD: overlap, Metric.HD95: distance},
        empty_list_std=EdgeCaseResult.NAN,
    )
    metrics = [Metric.DSC, Metric.NSD, Metric.HD95]
    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=MaxBipartiteMatching(matching_metric=Metric.DSC, matching_threshold=1e-6),
        edge_case_handler=edge,
        segmentation_class_groups=SegmentationClassGroups(groups),
        instance_metrics=metrics,
        global_metrics=metrics,
        decision_metric=None,
        decision_threshold=None,
    )


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def score(job: dict, engines: dict[str, Panoptica_Evaluator]) -> dict:
    gt = nib.load(job["gt"])
    if job.get("pred"):
        pred = nib.load(job["pred"])
    else:
        empty = np.zeros(gt.shape, dtype=np.asanyarray(gt.dataobj).dtype)
        pred = nib.Nifti1Image(empty, gt.affine, gt.header)
    if job.get("pred"):
        pred, gt = job["pred"], job["gt"]  # paths, as the package passes them
    results = engines[job["task"]].evaluate(pred, gt, verbose=False)
    return {name: _plain(result.to_dict(True)) for name, result in results.items()}


def main(argv: list[str]) -> int:
    jobs = json.loads(Path(argv[1]).read_text())
    repeat = int(argv[argv.index("--time") + 1]) if "--time" in argv else 0
    engines = {task: evaluator(task) for task in {job["task"] for job in jobs}}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for job in jobs:
            result = score(job, engines)
            times, cpu = [], []
            for _ in range(repeat):
                start, start_cpu = time.perf_counter(), time.process_time()
                score(job, engines)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            out[job["id"]] = {
                "result": result,
                "seconds": statistics.median(times) if times else None,
                "cpu_seconds": statistics.median(cpu) if cpu else None,
            }
    Path(argv[2]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
