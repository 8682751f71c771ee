"""Backend options validation and fold handling."""

from __future__ import annotations

import pytest

from segkit.backends.base import folds_of, validate_options
from segkit.backends.nnunet import NnUNetBackend
from segkit.errors import ConfigError


def test_validate_options_reroots_errors() -> None:
    with pytest.raises(ConfigError, match=r"^backends.nnunet.epochs: Input should be greater than or equal to 1$"):
        validate_options(NnUNetBackend(), {"epochs": 0}, where="backends.nnunet")
    with pytest.raises(ConfigError, match=r"backends.nnunet.trainr: unknown key; did you mean 'trainer'\?"):
        validate_options(NnUNetBackend(), {"trainr": "x"}, where="backends.nnunet")


def test_folds_of() -> None:
    assert folds_of(0) == (0,)
    assert folds_of("all") == ("all",)
    assert folds_of([0, 1]) == (0, 1)
