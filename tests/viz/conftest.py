"""Fixtures for the visualisation tests: a small anisotropic synthetic cohort."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _vizdata import SHAPE, SPACING

from segkit.data.synth import write_cohort


@pytest.fixture(scope="session")
def viz_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three cases of 24x28x20 voxels at 1x1x1.5 mm (LAS); the last one has no segmentation. Do not modify."""
    root = tmp_path_factory.mktemp("viz") / "training_data"
    write_cohort(root, cases=3, shape=SHAPE, spacing=SPACING, seed=5, without_labels=1)
    return root


@pytest.fixture
def viz_root(tmp_path: Path, viz_template: Path) -> Path:
    """A private copy of the three-case cohort."""
    dst = tmp_path / "training_data"
    shutil.copytree(viz_template, dst)
    return dst


@pytest.fixture
def no_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record (and forbid) every volume read: for requests that must never touch a file."""
    reads: list[Path] = []

    def forbidden(path, *args, **kwargs):
        reads.append(Path(path))
        raise AssertionError(f"read {path}")

    import segkit.io
    import segkit.viz.volumes

    monkeypatch.setattr(segkit.viz.volumes, "read_volume", forbidden)
    monkeypatch.setattr(segkit.io, "read_volume", forbidden)
    return reads
