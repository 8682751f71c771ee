"""Entry-point discovery, loading by name, suggestions and unavailable backends."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest

from segkit.backends.registry import GROUP, describe, discover, list_backends, load_backend
from segkit.errors import BackendError, BackendNotFoundError
from segkit.testing import FakeBackend, fake_entry_points


def test_segkit_registers_its_own_backends_as_entry_points() -> None:
    found = discover()
    assert found["nnunet"].value == "segkit.backends.nnunet:NnUNetBackend"
    assert all(ep.group == GROUP for ep in found.values())


def test_listing_reports_availability() -> None:
    rows = {row.name: row for row in list_backends({**discover(), **fake_entry_points()})}
    assert rows["fake"].available
    assert rows["nnunet"].available  # nnunetv2 and torch are core dependencies
    assert rows["nnunet"].summary.startswith("nnU-Net v2")


def test_load_by_name() -> None:
    assert isinstance(load_backend("fake", available=fake_entry_points()), FakeBackend)


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(BackendNotFoundError, match=r"unknown backend 'nnunt'; did you mean 'nnunet'\?"):
        load_backend("nnunt")
    assert BackendNotFoundError.exit_code == 2


def test_broken_plugin_is_unavailable_not_a_crash() -> None:
    broken = {"broken": EntryPoint("broken", "segkit_no_such_module:Backend", GROUP)}
    row = describe("broken", broken["broken"])
    assert not row.available
    assert "cannot import" in row.status
    with pytest.raises(BackendError, match="unavailable: cannot import"):
        load_backend("broken", available=broken)


def test_missing_framework_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeBackend, "unavailable_reason", classmethod(lambda cls: "fakeframework is not installed"))
    with pytest.raises(BackendError, match="'fake' is unavailable: fakeframework is not installed"):
        load_backend("fake", available=fake_entry_points())


def test_duplicate_names_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [
        EntryPoint("x", "segkit.testing:FakeBackend", GROUP),
        EntryPoint("x", "other.module:Backend", GROUP),
    ]
    monkeypatch.setattr(sys.modules["segkit.backends.registry"], "entry_points", lambda group: eps)
    with pytest.warns(UserWarning, match="declared twice"):
        found = discover()
    assert found["x"].value == "segkit.testing:FakeBackend"


def test_cli_backends_lists_nnunet(run_cli) -> None:
    result = run_cli("backends")
    assert result.code == 0
    assert "nnunet" in result.out
    assert "available" in result.out
