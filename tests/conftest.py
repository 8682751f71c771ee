"""Shared fixtures: a small synthetic cohort, an in-process CLI runner, stable terminal output."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _helpers import CliResult

from segkit.cli import main
from segkit.data.synth import write_cohort


@pytest.fixture(autouse=True)
def _stable_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide, colourless rich output so that assertions on text are stable."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.delenv("SEGKIT_DEBUG", raising=False)
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # a config layer: see config.load
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``segkit ARGS`` in this process; return exit code, stdout and stderr."""

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def cohort_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six labelled synthetic cases of 24^3 (do not modify: copy it with `cohort`)."""
    root = tmp_path_factory.mktemp("template") / "training_data"
    write_cohort(root, cases=6, shape=(24, 24, 24), seed=7)
    return root


@pytest.fixture
def cohort(tmp_path: Path, cohort_template: Path) -> Path:
    """A private copy of the six-case cohort under ``tmp_path/training_data``."""
    dst = tmp_path / "training_data"
    shutil.copytree(cohort_template, dst)
    return dst


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests cleanly on machines without CUDA (they run with `pytest -m gpu` on a GPU)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)
