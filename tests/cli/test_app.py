"""The root command: version, help, exit codes and error rendering."""

from __future__ import annotations

import subprocess
import sys

import pytest

from segkit import __version__
from segkit.errors import ConfigError, DataError


def test_version(run_cli) -> None:
    result = run_cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"segkit {__version__}"


def test_python_dash_m(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "segkit", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"segkit {__version__}"


def test_help_lists_groups(run_cli) -> None:
    result = run_cli("--help")
    assert result.code == 0
    for group in ("data", "config", "backends"):
        assert group in result.out


def test_unknown_command_is_usage_error(run_cli) -> None:
    result = run_cli("frobnicate")
    assert result.code == 2


@pytest.mark.parametrize(("error", "code"), [(DataError("bad case"), 1), (ConfigError("bad key"), 2)])
def test_segkit_error_is_one_line_and_exit_code(run_cli, monkeypatch, error, code) -> None:
    import segkit.api

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(segkit.api, "splits", boom)
    result = run_cli("data", "splits")
    assert result.code == code
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines == [f"error: {error}"]
    assert "Traceback" not in result.err


def test_hint_is_printed(run_cli, monkeypatch) -> None:
    import segkit.api

    def boom(*args, **kwargs):
        raise DataError("no data", hint="run segkit data prepare")

    monkeypatch.setattr(segkit.api, "splits", boom)
    result = run_cli("data", "splits")
    assert result.err.splitlines()[-1] == "hint: run segkit data prepare"


def test_debug_env_shows_traceback(run_cli, monkeypatch) -> None:
    import segkit.api

    def boom(*args, **kwargs):
        raise DataError("no data")

    monkeypatch.setattr(segkit.api, "splits", boom)
    monkeypatch.setenv("SEGKIT_DEBUG", "1")
    result = run_cli("data", "splits")
    assert result.code == 1
    assert "Traceback" in result.err


def test_backends_lists_without_error(run_cli) -> None:
    result = run_cli("backends")
    assert result.code == 0


def test_multi_value_options_stop_at_positionals() -> None:
    from segkit.cli._argv import expand_multi_value

    assert expand_multi_value(["eval", "--labels", "1", "3", "gt", "pred"]) == [
        "eval",
        "--labels",
        "1",
        "--labels",
        "3",
        "gt",
        "pred",
    ]
    assert expand_multi_value(["train", "-f", "0", "all", "--device", "cpu"]) == [
        "train",
        "-f",
        "0",
        "-f",
        "all",
        "--device",
        "cpu",
    ]
    assert expand_multi_value(["x", "--train-sources", "a", "b", "--", "c"]) == [
        "x",
        "--train-sources",
        "a",
        "--train-sources",
        "b",
        "--",
        "c",
    ]
