"""The child-process runner: results, user errors, and bare framework exceptions explained from the log."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from segkit.backends._process import run_worker
from segkit.errors import BackendRuntimeError, DataError

WORKER = """
import sys
from segkit.backends._process import worker_main
from segkit.errors import DataError


def ok(payload, emit):
    emit("step", n=1)
    return {"doubled": payload["x"] * 2}


def user_error(payload, emit):
    raise DataError("case_1: bad file", hint="fix it")


def bare(payload, emit):
    # What a framework pool does: the worker prints the cause, the parent raises an empty exception.
    print("AssertionError: Not all input images have the same shape", file=sys.stderr)
    raise RuntimeError()


if __name__ == "__main__":
    worker_main({"ok": ok, "user_error": user_error, "bare": bare})
"""


@pytest.fixture
def worker(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "fake_worker.py").write_text(textwrap.dedent(WORKER))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}


def test_result_and_events(worker: dict[str, str], tmp_path: Path) -> None:
    events: list[dict] = []
    result = run_worker("fake_worker", "ok", {"x": 21}, env=worker, log_file=tmp_path / "w.log", on_event=events.append)
    assert result == {"doubled": 42}
    assert events == [{"event": "step", "n": 1}]


def test_user_error_keeps_its_class_message_and_hint(worker: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^case_1: bad file$") as info:
        run_worker("fake_worker", "user_error", {}, env=worker, log_file=tmp_path / "w.log")
    assert info.value.hint == "fix it"


def test_bare_exception_quotes_the_cause_from_the_log(worker: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(BackendRuntimeError) as info:
        run_worker("fake_worker", "bare", {}, env=worker, log_file=tmp_path / "w.log")
    assert str(info.value) == "RuntimeError (AssertionError: Not all input images have the same shape)"
    assert info.value.hint == f"full log: {tmp_path / 'w.log'}"
