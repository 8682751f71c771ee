"""Turn ``--device auto|cuda|cpu|mps`` into a concrete device, failing early when it is absent."""

from __future__ import annotations

from segkit._optional import require
from segkit.errors import BackendError


def resolve_device(requested: str, *, supported: tuple[str, ...] = ("cpu", "cuda", "mps")) -> str:
    """The device to run on.

    ``auto`` picks CUDA, then Apple MPS, then the CPU. An explicit device that is not present is an
    error, so that a long job never silently falls back to the CPU.

    Raises:
        BackendError: The requested device is not available or not supported by the backend.
    """
    if requested not in ("auto", *supported):
        msg = f"device {requested!r} is not supported here (choose from auto, {', '.join(supported)})"
        raise BackendError(msg)
    if requested == "cpu":
        return "cpu"
    torch = require("torch")
    cuda = bool(torch.cuda.is_available())
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested == "cuda" and not cuda:
        msg = "CUDA was requested but no CUDA device is available"
        raise BackendError(msg, hint="use --device cpu (or auto), or check the GPU driver with nvidia-smi")
    if requested == "mps" and not mps:
        msg = "MPS was requested but this machine has no Apple GPU"
        raise BackendError(msg, hint="use --device cpu or auto")
    if requested != "auto":
        return requested
    for device, present in (("cuda", cuda), ("mps", mps)):
        if present and device in supported:
            return device
    return "cpu"


def cuda_device_count() -> int:
    """Number of visible CUDA devices (0 without CUDA)."""
    torch = require("torch")
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
