"""A third-party backend from a temporary package: listed, its own flags, values reach its `train`.

The plugin is a module plus a ``segkit.backends`` entry point in a dist-info folder on ``PYTHONPATH``;
segkit runs in a subprocess so that the entry points are read afresh. Nothing under ``segkit/cli`` or
``segkit/config`` knows about it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
"""A plugin backend for segkit's tests."""

from typing import Annotated, ClassVar

from pydantic import Field

from segkit.config.flags import INFER, TRAIN, CliFlag
from segkit.config.models import Strict
from segkit.io import write_json
from segkit.testing import FakeBackend


class PlugOptions(Strict):
    cli_panel: ClassVar[str] = "Plug backend"

    modality: Annotated[str, CliFlag("--plug-modality", commands=(TRAIN,))] = Field(
        "t2f", description="Modality the plug backend thresholds."
    )
    quantile: Annotated[float, CliFlag("--plug-quantile", "-Q", commands=(TRAIN, INFER))] = Field(
        0.95, gt=0, lt=1, description="Threshold quantile of the plug backend."
    )
    weights: Annotated[list[float] | None, CliFlag(commands=(TRAIN,))] = Field(
        None, description="Plug weights, one or more."
    )


class PlugBackend(FakeBackend):
    """Plug: a backend from a plugin package."""

    name: ClassVar[str] = "plug"
    Options: ClassVar[type[PlugOptions]] = PlugOptions

    def train(self, request, options, *, progress):
        result = super().train(request, options, progress=progress)
        write_json(result.model_dir / f"fold_{request.fold}" / "plug_options.json", options.model_dump())
        return result
'''


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    (site / "segkit_plug").mkdir(parents=True)
    (site / "segkit_plug" / "__init__.py").write_text(PLUGIN)
    info = site / "segkit_plug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segkit-plug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[segkit.backends]\nplug = segkit_plug:PlugBackend\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}


def segkit(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segkit", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_plugin_backend_is_listed(plugin_env: dict[str, str], tmp_path: Path) -> None:
    out = segkit(plugin_env, tmp_path, "backends")
    assert out.returncode == 0, out.stderr
    assert "plug" in out.stdout
    assert "segkit_plug:PlugBackend" in out.stdout
    assert "Plug: a backend from a plugin package." in out.stdout


def test_plugin_help_shows_its_own_flags(plugin_env: dict[str, str], tmp_path: Path) -> None:
    out = segkit(plugin_env, tmp_path, "train", "--backend", "plug", "--help")
    assert out.returncode == 0, out.stderr
    assert "Plug backend" in out.stdout
    assert "--plug-quantile" in out.stdout
    assert "-Q" in out.stdout
    assert "Threshold quantile of the plug backend." in out.stdout
    assert "MONAI backend" not in out.stdout
    assert "nnU-Net backend" not in out.stdout
    assert "--stage2-lr" not in out.stdout
    assert "--trainer" not in out.stdout
    infer = segkit(plugin_env, tmp_path, "infer", "--backend", "plug", "--help")
    assert "--plug-quantile" in infer.stdout
    assert "--plug-modality" not in infer.stdout
    every = segkit(plugin_env, tmp_path, "train", "--help")
    assert "--plug-quantile" in every.stdout
    assert "--stage2-lr" in every.stdout
    assert "--trainer" in every.stdout
    assert all(panel in every.stdout for panel in ("Plug backend", "MONAI backend", "nnU-Net backend"))


def test_plugin_flag_yaml_and_set_reach_train(
    plugin_env: dict[str, str], cohort: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli("data", "prepare", "--workers", "1").code == 0
    (tmp_path / "run.yaml").write_text("train:\n  device: cpu\nbackends:\n  plug:\n    quantile: 0.3\n")
    saved = tmp_path / "outputs/nnunet/nnUNet_results/Dataset501_BraTSPostTx/fake/fold_0/plug_options.json"

    def trained(*args: str) -> dict[str, object]:
        out = segkit(plugin_env, tmp_path, "train", "--backend", "plug", "--config", "run.yaml", *args)
        assert out.returncode == 0, out.stderr
        return json.loads(saved.read_text())

    assert trained()["quantile"] == 0.3  # YAML over the default
    assert trained("--set", "backends.plug.quantile=0.4")["quantile"] == 0.4  # --set over the YAML
    options = trained("--set", "backends.plug.quantile=0.4", "--plug-quantile", "0.5", "--weights", "1", "2.5")
    assert options["quantile"] == 0.5  # the flag over --set
    assert options["weights"] == [1.0, 2.5]
    assert trained("-Q", "0.6", "--plug-modality", "t1c") == {"modality": "t1c", "quantile": 0.6, "weights": None}

    bad = segkit(plugin_env, tmp_path, "train", "--backend", "plug", "--epochs", "3")
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[0] == (
        "error: --epochs is an option of the nnunet and umamba2 backends, not of 'plug'"
    )
    bad = segkit(plugin_env, tmp_path, "train", "--backend", "nnunet", "--plug-quantile", "0.5")
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[0] == "error: --plug-quantile is an option of the plug backend, not of 'nnunet'"
    bad = segkit(plugin_env, tmp_path, "train", "--backend", "plug", "--plug-quantile", "2")
    assert bad.returncode == 2
    assert "backends.plug.quantile: Input should be less than 1" in bad.stderr
    assert "Traceback" not in bad.stderr
