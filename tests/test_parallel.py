"""`segkit._parallel.map_cases`: order, errors, and stopping the workers (Ctrl-C itself: test_interrupt.py)."""

from __future__ import annotations

import functools
import math
import multiprocessing
import operator
import signal
import threading
import time
from pathlib import Path

import pytest

from segkit._parallel import map_cases
from segkit.io import atomic_path
from segkit.progress import RecordingProgress


def test_results_in_input_order_with_a_pool() -> None:
    progress = RecordingProgress()
    values = [9.0, 1.0, 4.0, 16.0, 25.0]
    assert map_cases(math.sqrt, values, workers=2, progress=progress) == [3.0, 1.0, 2.0, 4.0, 5.0]
    assert sum(1 for event in progress.events if event[0] == "advance") == len(values)
    assert progress.events[-1] == ("finish",)


def test_a_worker_error_reaches_the_caller_and_stops_the_rest() -> None:
    # Items are calls: 1/0 fails at once; the 30 s sleeps (one running, the rest queued) are not waited for.
    items = [functools.partial(operator.truediv, 1, 0), *[functools.partial(time.sleep, 30)] * 4]
    start = time.monotonic()
    with pytest.raises(ZeroDivisionError):
        map_cases(operator.call, items, workers=2)
    assert time.monotonic() - start < 20
    assert multiprocessing.active_children() == []


def test_keyboard_interrupt_in_the_parent_stops_the_workers_promptly() -> None:
    timer = threading.Timer(1.5, signal.raise_signal, args=(signal.SIGINT,))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            map_cases(time.sleep, [30.0, 30.0, 30.0], workers=2)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 15
    assert multiprocessing.active_children() == []
    assert not [t for t in threading.enumerate() if "QueueManager" in t.name or "ExecutorManager" in t.name]


def _write_slowly(dest: Path) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text("half")
        time.sleep(30)
        tmp.write_text("whole")


def test_stopped_workers_leave_no_temporary_files(tmp_path: Path) -> None:
    items = [tmp_path / f"{n}.txt" for n in range(3)]
    timer = threading.Timer(3.0, signal.raise_signal, args=(signal.SIGINT,))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            map_cases(_write_slowly, items, workers=2)
    finally:
        timer.cancel()
    assert multiprocessing.active_children() == []
    assert list(tmp_path.iterdir()) == []
