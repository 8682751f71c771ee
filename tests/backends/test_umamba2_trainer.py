"""nnUNetTrainerUMamba2: gradient accumulation equals the big batch (the fork's order does not), clipping,
compile off by default, and real train steps on a tiny UMambaBot2."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from _umamba2 import fake_batch, nnunet_folders, tiny_trainer  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from segkit.backends.umamba2.trainer import (  # noqa: E402
    Accumulator,
    micro_batch_step,
    nnUNetTrainerUMamba2,
    optimizer_step,
)

# ---------------------------------------------------------------------------------------------------------
# The step logic on a toy model


def _toy() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _micro_batches(n: int, size: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 3, generator=g), torch.randn(size, 1, generator=g)) for _ in range(n)]


def _loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)  # a mean over the batch, like nnU-Net's losses


class Recorder:
    """Wraps `optimizer.step`: keeps the parameters and gradients it was called with."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.params: list[list[torch.Tensor]] = []
        self.grads: list[list[torch.Tensor]] = []
        inner = optimizer.step

        def step(*args: object, **kwargs: object) -> object:
            self.params.append([p.detach().clone() for p in model.parameters()])
            self.grads.append([p.grad.detach().clone() for p in model.parameters()])  # type: ignore[union-attr]
            return inner(*args, **kwargs)

        optimizer.step = step  # type: ignore[method-assign]


def _big_batch_gradient(params: Sequence[torch.Tensor], group: list[tuple[torch.Tensor, torch.Tensor]]) -> list:
    """Gradient of the loss of one batch made of `group`, at `params`."""
    model = _toy()
    with torch.no_grad():
        for p, value in zip(model.parameters(), params, strict=True):
            p.copy_(value)
    x = torch.cat([b[0] for b in group])
    y = torch.cat([b[1] for b in group])
    _loss(model, (x, y)).backward()
    return [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]


def _groups(n: int, steps: int) -> list[list[int]]:
    return [list(range(i, min(i + steps, n))) for i in range(0, n, steps)]


def _run_segkit(n: int, steps: int, *, clip: float | None = None, scaler: object = None) -> tuple[Recorder, list]:
    model = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder(model, opt)
    acc = Accumulator(steps, n)
    batches = _micro_batches(n)
    stepped = [
        micro_batch_step(_loss(model, b), acc, opt, model.parameters(), grad_scaler=scaler, clip_norm=clip)
        for b in batches
    ]
    assert all(p.grad is None for p in model.parameters())  # zeroed after the epoch's last micro-batch
    return rec, stepped


def _run_fork_order(n: int, steps: int) -> Recorder:
    """The UMamba2 fork's control flow (reference 5.2): zero_grad at the start of a stepping micro-batch."""
    model = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder(model, opt)
    for i, batch in enumerate(_micro_batches(n)):
        step = (i + 1) % steps == 0 or i == n - 1
        if step:
            opt.zero_grad()
        (_loss(model, batch) / steps).backward()
        if step:
            opt.step()
    return rec


def _assert_big_batch(rec: Recorder, n: int, steps: int) -> None:
    batches = _micro_batches(n)
    groups = _groups(n, steps)
    assert len(rec.grads) == len(groups)
    for params, grads, group in zip(rec.params, rec.grads, groups, strict=True):
        expected = _big_batch_gradient(params, [batches[i] for i in group])
        for got, want in zip(grads, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("n", "steps"), [(6, 2), (7, 3), (5, 2), (4, 4), (3, 1)])
def test_accumulated_gradient_at_each_step_is_the_big_batch_gradient(n: int, steps: int) -> None:
    rec, stepped = _run_segkit(n, steps)
    # Steps after every N-th micro-batch and after the last one of the epoch.
    assert [i + 1 for i, s in enumerate(stepped) if s] == [g[-1] + 1 for g in _groups(n, steps)]
    _assert_big_batch(rec, n, steps)


def test_the_forks_zero_grad_order_fails_the_same_check() -> None:
    """The same check on the fork's order: the first micro-batch of each pair is lost, so it must fail."""
    rec = _run_fork_order(6, 2)
    with pytest.raises(AssertionError):
        _assert_big_batch(rec, 6, 2)
    # What it actually applies: only the second micro-batch of each pair, at half weight.
    batches = _micro_batches(6)
    for params, grads, i in zip(rec.params, rec.grads, (1, 3, 5), strict=True):
        half = [g / 2 for g in _big_batch_gradient(params, [batches[i]])]
        for got, want in zip(grads, half, strict=True):
            torch.testing.assert_close(got, want)


def test_grad_scaler_path_unscales_before_clipping_and_still_equals_the_big_batch() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    rec, _ = _run_segkit(6, 2, scaler=scaler)
    _assert_big_batch(rec, 6, 2)  # the optimizer saw unscaled gradients
    clipped, _ = _run_segkit(6, 2, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10), clip=1e-3)
    for grads in clipped.grads:
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        assert float(total) == pytest.approx(1e-3, rel=1e-3)  # clipped at the true norm, not the scaled one


@pytest.mark.parametrize("clip", [None, 0, -1.0])
def test_no_clipping_when_off(clip: float | None) -> None:
    rec, _ = _run_segkit(4, 2, clip=clip)
    _assert_big_batch(rec, 4, 2)


def test_clipping_applies_to_the_accumulated_gradient() -> None:
    rec, _ = _run_segkit(4, 2, clip=1e-3)
    unclipped, _ = _run_segkit(4, 2)
    for grads, raw in zip(rec.grads, unclipped.grads, strict=True):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        raw_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw]))
        assert raw_norm > 1e-2
        assert float(norm) == pytest.approx(1e-3, rel=1e-4)


def test_accumulator_group_sizes_and_reset() -> None:
    acc = Accumulator(3, 7)
    sizes, steps = [], []
    for _ in range(7):
        sizes.append(acc.group_size)
        steps.append(acc.done())
    assert sizes == [3, 3, 3, 3, 3, 3, 1]
    assert steps == [False, False, True, False, False, True, True]
    assert Accumulator(2).group_size == 2  # epoch length unknown: every group is full
    with pytest.raises(ValueError, match="at least 1"):
        Accumulator(0, 5)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_accumulation_steps_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="accumulation_steps"):
        Accumulator(bad)  # type: ignore[arg-type]


def test_optimizer_step_zeroes_gradients() -> None:
    model = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _loss(model, _micro_batches(1)[0]).backward()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer_step(opt, model.parameters(), clip_norm=12.0)
    assert all(p.grad is None for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# ---------------------------------------------------------------------------------------------------------
# The nnU-Net trainer


class _Accum2(nnUNetTrainerUMamba2):
    accumulation_steps = 2


def test_constructor_signature_is_nnunets() -> None:
    """nnU-Net records (and later replays) the constructor's arguments by their names."""
    ours = inspect.signature(nnUNetTrainerUMamba2.__init__).parameters
    theirs = inspect.signature(nnUNetTrainer.__init__).parameters
    assert list(ours) == list(theirs)
    assert [p.default for p in ours.values()] == [p.default for p in theirs.values()]


def test_zero_accumulation_steps_fails_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = nnunet_folders(tmp_path, monkeypatch)

    class Zero(nnUNetTrainerUMamba2):
        accumulation_steps = 0

    with pytest.raises(ValueError, match="accumulation_steps must be an integer of at least 1, not 0"):
        tiny_trainer(Zero, initialize=False)
    assert list((root / "results").iterdir()) == []


def _steps_of(trainer: nnUNetTrainerUMamba2) -> list[int]:
    """Record, for each optimizer step, how many train_step calls had started."""
    calls: list[int] = []
    counter = {"n": 0}
    inner_step, inner_train = trainer.optimizer.step, trainer.train_step

    def step(*args: object, **kwargs: object) -> object:
        calls.append(counter["n"])
        return inner_step(*args, **kwargs)

    def train_step(batch: dict) -> dict:
        counter["n"] += 1
        return inner_train(batch)

    trainer.optimizer.step = step  # type: ignore[method-assign]
    trainer.train_step = train_step  # type: ignore[method-assign]
    return calls


def test_train_step_steps_after_every_second_micro_batch_and_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(_Accum2)
    trainer.num_iterations_per_epoch = 5
    calls = _steps_of(trainer)
    params = list(trainer.network.parameters())
    batches = [fake_batch(seed=i) for i in range(5)]

    trainer.on_train_epoch_start()
    # The logged loss is the micro-batch's own (un-divided): recompute it with the same, unchanged weights.
    with torch.no_grad():
        expected = float(trainer.loss(trainer.network(batches[0]["data"]), batches[0]["target"]))
    out = trainer.train_step(batches[0])
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)
    assert calls == []
    # Accumulating (nnU-Net gives the lowest-resolution deep-supervision head a weight of 0: no gradient).
    assert all(p.grad is not None for n, p in trainer.network.named_parameters() if "seg_layers.0." not in n)
    trainer.train_step(batches[1])
    assert calls == [2]
    assert all(p.grad is None for p in params)  # zeroed after the step
    for batch in batches[2:]:
        trainer.train_step(batch)
    assert calls == [2, 4, 5]  # the epoch's last micro-batch steps alone
    assert all(p.grad is None for p in params)

    # The counter restarts with the next epoch.
    trainer.current_epoch = 1
    trainer.on_train_epoch_start()
    for batch in batches[:2]:
        trainer.train_step(batch)
    assert calls == [2, 4, 5, 7]


def test_train_step_gradient_equals_the_big_batch_on_the_real_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two micro-batches of 1 accumulate to the gradient of their batch of 2 (nnU-Net's loss is a batch mean)."""
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(_Accum2, batch_size=1)
    trainer.num_iterations_per_epoch = 2
    trainer.grad_clip_norm = None
    big = fake_batch(2, seed=3)
    halves = [{"data": big["data"][i : i + 1], "target": [t[i : i + 1] for t in big["target"]]} for i in (0, 1)]
    seen: list[dict[str, torch.Tensor | None]] = []
    inner = trainer.optimizer.step

    def step(*args: object, **kwargs: object) -> object:
        seen.append({n: None if p.grad is None else p.grad.clone() for n, p in trainer.network.named_parameters()})
        return inner(*args, **kwargs)

    trainer.optimizer.step = step  # type: ignore[method-assign]
    reference = [p.detach().clone() for p in trainer.network.parameters()]
    trainer.on_train_epoch_start()
    for half in halves:
        trainer.train_step(half)
    assert len(seen) == 1

    with torch.no_grad():
        for p, value in zip(trainer.network.parameters(), reference, strict=True):
            p.copy_(value)
    trainer.network.zero_grad(set_to_none=True)
    # nnU-Net's Dice is per sample here (batch_dice false) and its CE a voxel mean, so the loss of the
    # batch of 2 is the mean of the two samples' losses.
    trainer.loss(trainer.network(big["data"]), big["target"]).backward()
    compared = 0
    for name, p in trainer.network.named_parameters():
        if p.grad is None:  # the zero-weighted lowest deep-supervision head
            assert seen[0][name] is None, name
            continue
        torch.testing.assert_close(seen[0][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
        compared += 1
    assert compared > 50


def test_compile_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA nnU-Net compiles unless told not to; this trainer only when nnUNet_compile says so."""

    def on_cuda(cls: type) -> Callable[[], bool]:
        trainer = object.__new__(cls)
        trainer.device = torch.device("cuda", 0)  # only what _do_i_compile reads; no GPU needed
        return trainer._do_i_compile

    monkeypatch.delenv("nnUNet_compile", raising=False)
    assert on_cuda(nnUNetTrainer)() is True
    assert on_cuda(nnUNetTrainerUMamba2)() is False
    for value, expected in [("t", True), ("TRUE", True), ("1", True), ("0", False), ("false", False), ("", False)]:
        monkeypatch.setenv("nnUNet_compile", value)
        assert on_cuda(nnUNetTrainerUMamba2)() is expected, value


def test_settings_are_logged_and_checked_at_training_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(_Accum2, initialize=False)
    # The rest of on_train_start needs a preprocessed dataset; what this trainer adds runs around it.
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: self.initialize())
    trainer.grad_clip_norm = 5.0
    trainer.on_train_start()
    log = Path(trainer.log_file).read_text()
    assert "gradient accumulation: 2 micro-batch(es) of 2 per optimizer step (effective batch size 4)" in log
    assert "gradient clipping at norm 5" in log

    late = tiny_trainer(nnUNetTrainerUMamba2, initialize=False)
    late.accumulation_steps = 0  # as derive_trainer's overrides would set it, after the constructor
    with pytest.raises(ValueError, match="accumulation_steps"):
        late.on_train_start()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_accumulation_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net's CUDA path: autocast and its GradScaler (unscale, clip, step, update) every second micro-batch."""
    nnunet_folders(tmp_path, monkeypatch)
    trainer = tiny_trainer(_Accum2, device="cuda")
    assert trainer.grad_scaler is not None
    trainer.num_iterations_per_epoch = 3
    calls = _steps_of(trainer)
    trainer.on_train_epoch_start()
    losses = [float(trainer.train_step(fake_batch(seed=i))["loss"]) for i in range(3)]
    assert calls == [2, 3]
    assert all(np.isfinite(losses))
    assert all(bool(torch.isfinite(p).all()) for p in trainer.network.parameters())
    assert all(p.grad is None for p in trainer.network.parameters())
