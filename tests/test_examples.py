"""Every example run config validates, including the options of the backends it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit import api
from segkit.config import load_config

EXAMPLES = sorted((Path(__file__).parents[1] / "examples" / "configs").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_validates(path: Path) -> None:
    cfg = load_config(path, flags={"train.fold": "all"})
    assert cfg.version == 1
    for section in (cfg.train, cfg.infer):
        api.backend_and_options(cfg, section.backend)
