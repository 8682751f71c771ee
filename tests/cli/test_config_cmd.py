"""`segkit config schema|show`."""

from __future__ import annotations

import json

import yaml


def test_schema_lists_sections(run_cli) -> None:
    result = run_cli("config", "schema")
    assert result.code == 0
    schema = json.loads(result.out)
    assert {"dataset", "nnunet", "synth", "check", "prepare", "splits"} <= set(schema["properties"])


def test_schema_of_one_section(run_cli) -> None:
    result = run_cli("config", "schema", "prepare")
    assert result.code == 0
    assert "require_test_labels" in json.loads(result.out)["properties"]


def test_schema_unknown_section(run_cli) -> None:
    result = run_cli("config", "schema", "prepar")
    assert result.code == 2
    assert "did you mean 'prepare'" in result.err


def test_show_resolves_yaml_and_set(run_cli, tmp_path) -> None:
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("synth:\n  cases: 3\nsplits:\n  seed: 1\n")
    result = run_cli("config", "show", "--config", run_yaml, "--set", "splits.seed=2")
    assert result.code == 0
    shown = yaml.safe_load(result.out)
    assert shown["synth"]["cases"] == 3
    assert shown["splits"]["seed"] == 2


def test_show_reports_bad_key_with_exit_2(run_cli) -> None:
    result = run_cli("config", "show", "--set", "splits.sed=1")
    assert result.code == 2
    assert result.err.strip().splitlines()[0] == "error: splits.sed: unknown key; did you mean 'seed'?"
