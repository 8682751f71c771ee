"""The panoptica oracle of the brats2025 tests: its environment, a runner, and the comparison of results.

panoptica 2.1.7 lives in the uv project `tests/oracle_panoptica/` with its own lock (it pins numpy<2.3,
cc3d<4 and rich<14, which segkit's lock must not carry). Build it with
``uv sync --project tests/oracle_panoptica``; the tests that need it skip without it, unless
``SEGKIT_REQUIRE_ORACLE=1`` (CI), where a missing oracle fails them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from segkit.metrics.panoptic import COUNT_KEYS, DISTANCE_KEYS, REGION_KEYS

ORACLE = Path(__file__).parent / "oracle_panoptica"


def oracle_python() -> Path:
    """The oracle environment's interpreter; skips the test (fails it with SEGKIT_REQUIRE_ORACLE=1) when absent."""
    python = ORACLE / ".venv" / "bin" / "python"
    if not python.is_file():
        reason = f"panoptica oracle not built: uv sync --project {ORACLE}"
        if os.environ.get("SEGKIT_REQUIRE_ORACLE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return python


def run_oracle(jobs: list[dict[str, Any]], *, repeat: int = 0, timeout: float = 900) -> dict[str, Any]:
    """panoptica's results for `jobs` (see `run_oracle.py`): id -> {"result": region -> to_dict, "seconds"}."""
    python = oracle_python()
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out_file = Path(tmp) / "jobs.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(jobs))
        command = [str(python), str(ORACLE / "run_oracle.py"), str(job_file), str(out_file)]
        if repeat:
            command += ["--time", str(repeat)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            pytest.fail(f"panoptica oracle failed: {done.stderr[-2000:]}")
        return json.loads(out_file.read_text())


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _tolerance(key: str) -> float:
    if key in COUNT_KEYS or key in ("voxel_count", "is_matched"):
        return 0.0
    return 1e-3 if key in DISTANCE_KEYS or "hd95" in key else 1e-6


def _same(got: float, want: float, key: str) -> bool:
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if math.isinf(want) or math.isinf(got):
        return got == want
    return abs(got - want) <= _tolerance(key)


def _by_values(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("is_matched", "voxel_count", "sq_dsc", "sq_hd95", "sq_nsd")
    return sorted(instances, key=lambda i: tuple(_number(i.get(k, -1.0)) for k in keys))


def compare_region(
    got_values: dict[str, float], got_instances: list[dict[str, Any]], want: dict[str, Any], *, ordered: bool = True
) -> list[str]:
    """Differences between segkit's results of one region and the package's (empty when they agree).

    `ordered`: the reference lesions in the same order (the package's, which segkit follows); panoptica
    called directly lists matched lesions in another order, so the oracle compares them as a set.
    """
    problems = []
    for key in REGION_KEYS:
        if not _same(float(got_values[key]), _number(want.get(key)), key):
            problems.append(f"{key}: package {want.get(key)!r}, segkit {got_values[key]!r}")
    instances = want["reference_instances"]
    if not ordered:
        got_instances, instances = _by_values(got_instances), _by_values(instances)
    if len(got_instances) != len(instances):
        return [*problems, f"reference_instances: package {len(instances)}, segkit {len(got_instances)}"]
    for index, (got, expected) in enumerate(zip(got_instances, instances, strict=True)):
        if set(got) != set(expected):
            problems.append(f"reference_instances[{index}] keys {sorted(got)} vs {sorted(expected)}")
            continue
        for key, value in expected.items():
            if not _same(float(got[key]), _number(value), key):
                problems.append(f"reference_instances[{index}].{key}: package {value!r}, segkit {got[key]!r}")
    return problems
