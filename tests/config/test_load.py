"""Config precedence, path resolution and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit.config import dump_config, load_config
from segkit.config.load import nest, parse_set
from segkit.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults() -> None:
    cfg = load_config()
    assert cfg.dataset == "Dataset501_BraTSPostTx"
    assert cfg.splits.folds == 5
    assert cfg.splits.seed == 12345
    assert cfg.nnunet.raw == Path("outputs/nnunet/nnUNet_raw")


def test_precedence_default_yaml_set_flag(tmp_path: Path) -> None:
    yml = write(tmp_path / "run.yaml", "synth:\n  cases: 3\n  seed: 5\n  shape: [16, 16, 16]\n")
    cfg = load_config(yml)
    assert (cfg.synth.cases, cfg.synth.seed, cfg.synth.shape, cfg.synth.unlabelled) == (3, 5, (16, 16, 16), 0)
    cfg = load_config(yml, sets=["synth.cases=4", "synth.unlabelled=1"])
    assert (cfg.synth.cases, cfg.synth.seed, cfg.synth.unlabelled) == (4, 5, 1)
    cfg = load_config(yml, sets=["synth.cases=4"], flags={"synth.cases": 9, "synth.seed": None})
    assert (cfg.synth.cases, cfg.synth.seed) == (9, 5)


def test_later_set_wins() -> None:
    assert load_config(sets=["synth.cases=2", "synth.cases=3"]).synth.cases == 3


def test_yaml_paths_resolve_against_yaml_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yml = write(
        tmp_path / "configs" / "run.yaml", "prepare:\n  train_sources: [../data, /abs/data]\nnnunet:\n  raw: raw\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(yml)
    assert cfg.prepare.train_sources == [(tmp_path / "configs" / "../data"), Path("/abs/data")]
    assert cfg.nnunet.raw == tmp_path / "configs" / "raw"


def test_set_and_flag_paths_stay_relative_to_cwd(tmp_path: Path) -> None:
    yml = write(tmp_path / "configs" / "run.yaml", "nnunet:\n  raw: raw\n")
    assert load_config(yml, sets=["nnunet.raw=other"]).nnunet.raw == Path("other")
    assert load_config(yml, flags={"nnunet.raw": Path("flag")}).nnunet.raw == Path("flag")


def test_unknown_key_names_key_and_suggests(tmp_path: Path) -> None:
    yml = write(tmp_path / "run.yaml", "prepare:\n  claen: true\n")
    with pytest.raises(ConfigError, match=r"run.yaml: prepare.claen: unknown key; did you mean 'clean'\?"):
        load_config(yml)
    with pytest.raises(ConfigError, match=r"^synth.cases: Input should be greater than or equal to 1$"):
        load_config(sets=["synth.cases=0"])
    with pytest.raises(ConfigError, match=r"^prepar: unknown key; did you mean 'prepare'\?"):
        load_config(sets=["prepar.clean=true"])


def test_bad_type_names_key() -> None:
    with pytest.raises(ConfigError, match=r"synth.shape"):
        load_config(sets=["synth.shape=[1,2]"])


def test_dataset_name_validated() -> None:
    with pytest.raises(ConfigError, match=r"^dataset: must be of the form DatasetNNN_Name"):
        load_config(flags={"dataset": "Dataset5_Foo"})


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    yml = write(tmp_path / "run.yaml", "synth:\n  cases: [1\n")
    with pytest.raises(ConfigError, match=r"run.yaml: not valid YAML at line \d+"):
        load_config(yml)


def test_yaml_must_be_mapping(tmp_path: Path) -> None:
    yml = write(tmp_path / "run.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(yml)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    yml = write(tmp_path / "run.yaml", "synth: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(yml)


@pytest.mark.parametrize("item", ["nokey", "=3", ""])
def test_set_needs_key_and_equals(item: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(item)


def test_set_values_are_yaml_scalars() -> None:
    assert parse_set("a.b=true") == ("a.b", True)
    assert parse_set("a=[1, 2]") == ("a", [1, 2])
    assert parse_set("a=all") == ("a", "all")
    assert parse_set("a=") == ("a", None)
    assert nest({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}


def test_config_is_frozen() -> None:
    cfg = load_config()
    with pytest.raises(Exception, match="frozen"):
        cfg.synth.cases = 3  # type: ignore[misc]


def test_dump_roundtrip(tmp_path: Path) -> None:
    cfg = load_config(sets=["synth.cases=4", "prepare.clean=true"])
    yml = write(tmp_path / "resolved.yaml", dump_config(cfg))
    assert load_config(yml).synth.cases == 4
    assert load_config(yml).prepare.clean is True


def test_backend_sections_are_validated_only_when_selected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segkit.backends.monai_bundle.options import MonaiOptions
    from segkit.backends.nnunet.options import NnUNetOptions
    from segkit.config.load import backend_options

    yml = write(
        tmp_path / "configs" / "run.yaml",
        "backends:\n  nnunet:\n    pretrained_weights: w/fold0.pth\n    epochs: 3\n  monai:\n    stage1_epochs: -1\n",
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(yml)  # the invalid monai section does not matter until monai is selected
    nnunet = backend_options(cfg, "nnunet", NnUNetOptions)
    assert nnunet.pretrained_weights == tmp_path / "configs" / "w" / "fold0.pth"  # anchored to the YAML
    assert nnunet.epochs == 3
    with pytest.raises(ConfigError, match=r"run.yaml: backends.monai.stage1_epochs: Input should be greater"):
        backend_options(cfg, "monai", MonaiOptions)
    overridden = load_config(yml, sets=["backends.nnunet.pretrained_weights=other.pth"])
    assert backend_options(overridden, "nnunet", NnUNetOptions).pretrained_weights == Path("other.pth")
    flagged = load_config(yml, flags={"backends.nnunet.epochs": 5})
    assert backend_options(flagged, "nnunet", NnUNetOptions).epochs == 5
    with pytest.raises(ConfigError, match=r"^backends.nnunet.epochs: Input should be greater than or equal to 1$"):
        backend_options(load_config(yml, sets=["backends.nnunet.epochs=0"]), "nnunet", NnUNetOptions)


def test_loading_a_config_imports_no_backend(tmp_path: Path) -> None:
    import subprocess
    import sys

    yml = write(tmp_path / "run.yaml", "backends:\n  nnunet:\n    epochs: 3\n  monai:\n    amp: true\n")
    code = (
        "import sys\nfrom segkit.config import load_config\n"
        f"load_config({str(yml)!r})\nprint(sorted(m for m in sys.modules if m.startswith('segkit.backends')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_utf8_bom_and_utf32_configs(tmp_path: Path) -> None:
    for encoding in ("utf-8-sig", "utf-16-be", "utf-32"):
        path = tmp_path / f"{encoding}.yaml"
        text = "synth:\n  cases: 4\n"
        data = text.encode(encoding)
        if encoding == "utf-16-be":
            data = b"\xfe\xff" + data
        path.write_bytes(data)
        assert load_config(path).synth.cases == 4, encoding
