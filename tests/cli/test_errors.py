"""Usage errors, run-config encodings and rich markup in paths: one line plus a hint, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit.data.synth import write_cohort


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    assert all(line.startswith("hint: ") for line in lines[1:]), err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--bogus"], "error: No such option: --bogus"),
        (
            ["data", "synth", "--cases", "many"],
            "error: Invalid value for '--cases' / '-n': Input should be a valid integer",
        ),
        (["train", "--option"], "error: Option '--option' requires an argument."),
        (["nosuch"], "error: No such command 'nosuch'."),
        (["train", "--spacing", "1", "2"], "error: Option '--spacing' requires 3 arguments."),
    ],
)
def test_usage_errors_are_one_line_with_a_hint(run_cli, args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.code == 2
    assert _one_error(result.err).startswith(message), result.err
    assert "--help" in result.err.splitlines()[-1]
    assert "╭" not in result.err
    assert "Usage:" not in result.err


def test_utf16_run_config_with_bom_is_read(tmp_path: Path, run_cli) -> None:
    config = tmp_path / "run.yaml"
    config.write_bytes("synth:\n  cases: 3\n  seed: 11\n".encode("utf-16"))  # Notepad's "Unicode": a BOM
    assert config.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    result = run_cli("config", "show", "--config", config)
    assert result.code == 0, result.err
    assert "cases: 3" in result.out
    assert "seed: 11" in result.out


def test_non_utf8_run_config_is_one_line(tmp_path: Path, run_cli) -> None:
    config = tmp_path / "run.yaml"
    config.write_bytes("synth:\n  output: Köln\n".encode("latin-1"))
    result = run_cli("config", "show", "--config", config)
    assert result.code == 2
    assert _one_error(result.err) == f"error: {config}: not UTF-8 text (byte 0xf6 at offset 18)"


@pytest.mark.parametrize("name", ["cohort [backup]", "odd[/]name", "[bold]x"])
def test_paths_with_rich_markup_print_as_they_are(tmp_path: Path, run_cli, name: str, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / name / "data" if "/" in name else tmp_path / name
    write_cohort(root, cases=1, shape=(12, 12, 12), seed=1)
    shown = str(root.relative_to(tmp_path))
    result = run_cli("data", "check", shown)
    assert result.code == 0, result.err
    assert f"1 cases in {shown}" in result.out
    # a problem of a case names its file under the root, markup and all
    next(root.glob("*/*-t1n.nii.gz")).unlink()
    broken = run_cli("data", "check", shown)
    assert broken.code == 1
    assert f"{shown}/" in broken.out + broken.err
    assert "Traceback" not in broken.err
    missing = run_cli("data", "check", shown + " [gone]")
    assert missing.code != 0
    assert _one_error(missing.err) == f"error: {shown} [gone]: data root not found"


def test_eval_ignores_an_invalid_backend_section(tmp_path: Path, run_cli) -> None:
    import nibabel as nib
    import numpy as np

    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[3:8, 3:8, 3:8] = 2
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / folder / "case.nii.gz"))
    config = tmp_path / "run.yaml"
    config.write_text("backends:\n  monai:\n    stage1_epochs: -1\n    no_such_key: 1\n")
    args = ["eval", tmp_path / "gt", tmp_path / "pred", "-o", tmp_path / "out", "--skip-nnunet", "--no-figure"]
    result = run_cli(*args, "-j", "1", "--config", config)
    assert result.code == 0, result.err
    assert (tmp_path / "out" / "full_metrics.json").is_file()
    # the same section is an error, rooted at its key, once the MONAI backend is selected
    bad = run_cli("train", "--backend", "monai", "--config", config)
    assert bad.code == 2
    line = _one_error(bad.err)
    assert line.startswith(f"error: {config}: backends.monai.")
    assert "backends.monai.stage1_epochs: Input should be greater than or equal to 0" in line
    assert "backends.monai.no_such_key: unknown key" in line
