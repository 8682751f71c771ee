"""Ctrl-C ends every command with one line and exit 130: no traceback (parent or worker), nothing partial.

Each run is a real ``segkit`` process in its own session; SIGINT goes to the whole process group, as a
terminal's Ctrl-C does, at several moments: during start-up (imports), while the spawned workers start,
and while they work.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _helpers import snapshot

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc and POSIX signals")

SEGKIT = Path(sys.executable).with_name("segkit")
COMMAND = [str(SEGKIT)] if SEGKIT.exists() else [sys.executable, "-m", "segkit"]
TEMP_MARKERS = (".tmp", ".partial", ".staging")


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (read from /proc, so no extra dependency)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Field 4 (ppid) follows the parenthesised command name, which may itself contain spaces.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _interrupt(args: list[str], when: Callable[[subprocess.Popen[str]], None]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        when(proc)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def after(seconds: float) -> Callable[[subprocess.Popen[str]], None]:
    """Start-up moments: a fixed delay after the process starts."""

    def wait(proc: subprocess.Popen[str]) -> None:
        time.sleep(seconds)

    wait.__name__ = f"after {seconds} s"
    return wait


def workers_alive(extra: float) -> Callable[[subprocess.Popen[str]], None]:
    """Mid-run moments: once the pool's workers exist (they may still be importing), plus `extra` seconds."""

    def wait(proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline and len(_children(proc.pid)) < 2:
            time.sleep(0.02)
        time.sleep(extra)

    wait.__name__ = f"workers + {extra} s"
    return wait


def _check(result: subprocess.CompletedProcess[str], moment: str) -> bool:
    """Assert a clean end; True when the run was interrupted (not finished first)."""
    assert "Traceback" not in result.stderr, (moment, result.stderr)
    assert "Error" not in result.stderr, (moment, result.stderr)
    if result.returncode == 0:
        return False
    if result.returncode == -signal.SIGINT:
        # Killed before the interpreter installed its handler: silent, and a shell reports 130 too.
        assert result.stderr == "", (moment, result.stderr)
        return True
    assert result.returncode == 130, (moment, result.returncode, result.stderr)
    assert result.stderr.strip().splitlines() == ["interrupted"], (moment, result.stderr)
    return True


def _no_partial_files(root: Path) -> None:
    if not root.exists():
        return
    for path in root.rglob("*"):
        assert not any(marker in path.name for marker in TEMP_MARKERS), path
        if path.suffix == ".json":
            json.loads(path.read_text())  # whole, never half-written


@pytest.fixture(scope="module")
def many_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("interrupt") / "cohort"
    subprocess.run(
        [*COMMAND, "data", "synth", str(root), "--cases", "8", "--shape", "48", "48", "40"],
        check=True,
        capture_output=True,
    )
    return root


@pytest.fixture(scope="module")
def label_folders(many_cases: Path) -> tuple[Path, Path]:
    gt, pred = many_cases.parent / "gt", many_cases.parent / "pred"
    for folder in (gt, pred):
        folder.mkdir()
        for case in sorted(p for p in many_cases.iterdir() if p.is_dir()):
            shutil.copy(case / f"{case.name}-seg.nii.gz", folder / f"{case.name}.nii.gz")
    return gt, pred


# Not earlier than ~0.2 s: before that the interpreter itself is starting (importing `site`), and a
# KeyboardInterrupt there is CPython's own "Fatal Python error", before any segkit code can run.
MOMENTS = [after(0.25), after(0.6), workers_alive(0.0), workers_alive(0.5)]


def test_ctrl_c_during_eval_with_workers(label_folders: tuple[Path, Path], tmp_path: Path) -> None:
    gt, pred = label_folders
    before = snapshot(gt, pred)
    interrupted = 0
    for i, moment in enumerate(MOMENTS):
        out = tmp_path / f"reports{i}"
        args = ["eval", str(gt), str(pred), "-o", str(out), "-j", "2", "--skip-nnunet"]
        result = _interrupt(args, moment)
        interrupted += _check(result, moment.__name__)
        _no_partial_files(out)
        if result.returncode == 130:
            assert not (out / "full_metrics.json").exists(), moment.__name__
    assert snapshot(gt, pred) == before
    assert interrupted >= 3, "the runs ended before SIGINT arrived; the test checked too little"


def test_ctrl_c_during_prepare_with_workers(many_cases: Path, tmp_path: Path) -> None:
    before = snapshot(many_cases)
    interrupted = 0
    for i, moment in enumerate(MOMENTS):
        raw = tmp_path / f"raw{i}"
        args = ["data", "prepare", "--train-sources", str(many_cases), "-d", "Dataset777_Stop"]
        result = _interrupt([*args, "--nnunet-raw", str(raw), "-j", "2"], moment)
        interrupted += _check(result, moment.__name__)
        _no_partial_files(raw)
        if result.returncode == 130 and (raw / "Dataset777_Stop").exists():
            # Whatever is left is a whole dataset, never one without its dataset.json.
            assert (raw / "Dataset777_Stop" / "dataset.json").is_file(), moment.__name__
    assert snapshot(many_cases) == before
    assert interrupted >= 2, "the runs ended before SIGINT arrived; the test checked too little"


@pytest.mark.parametrize("delay", [0.25, 0.4, 0.6])
def test_ctrl_c_during_start_up(delay: float) -> None:
    result = _interrupt(["eval", "--help"], after(delay))
    _check(result, f"after {delay} s")
