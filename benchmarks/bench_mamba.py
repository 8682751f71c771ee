"""Mamba2 mixer speed: forward and forward+backward of `Mamba2Mixer`, PyTorch SSD scan vs mamba-ssm's kernel.

The mixer is UMambaBot2's (d_model 320, d_state 32, d_conv 4, expand 2, headdim 80, float32 weights),
on random (batch, tokens, 320) inputs:

* (2, 80): the seed's bottleneck (patch 160x256x256, 7 stages: 5x4x4 tokens), batch 2;
* (1, 512) and (1, 4096): longer sequences (a larger patch or fewer stages).

On the CPU the torch kernel runs with chunks of 64 (its default, `torch_chunk_size`) and of 256
(mamba-ssm's default chunk, `chunk_size`); on a GPU, when one is present, both kernels run (mamba-ssm only when
it imports). Each figure is the median of ``--repeats`` timed runs after one untimed warm-up; the
backward pass is that of ``out.square().mean()`` with respect to the input and all parameters. The
fastest run is reported too: on a shared machine it is the better estimate of the cost itself.

Run: ``uv run python benchmarks/bench_mamba.py [--repeats N] [--threads T] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

SHAPES = [(2, 80), (1, 512), (1, 4096)]


def _timed(fn: Callable[[], Any], device: Any, repeats: int) -> list[float]:
    import torch

    times = []
    fn()  # warm-up: allocator, kernel autotuning, first-call dispatch
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def measure(kernel: str, device_name: str, batch: int, tokens: int, chunk_size: int, repeats: int) -> dict[str, Any]:
    """Median forward and forward+backward seconds of one mixer configuration."""
    import torch

    from segkit.backends.umamba2.mamba2 import Mamba2Mixer

    device = torch.device(device_name)
    torch.manual_seed(0)
    # chunk_size is that of whichever kernel runs (the torch scan's or mamba-ssm's)
    mixer = Mamba2Mixer(d_model=320, chunk_size=chunk_size, torch_chunk_size=chunk_size, kernel=kernel).to(device)
    u = torch.randn(batch, tokens, 320, device=device)

    def forward() -> None:
        with torch.no_grad():
            mixer(u)

    def forward_backward() -> None:
        x = u.clone().requires_grad_()
        mixer.zero_grad(set_to_none=True)
        mixer(x).square().mean().backward()

    fwd = _timed(forward, device, repeats)
    both = _timed(forward_backward, device, repeats)
    return {
        "kernel": kernel,
        "device": device_name,
        "batch": batch,
        "tokens": tokens,
        "chunk_size": chunk_size,
        "forward_ms": round(1e3 * statistics.median(fwd), 2),
        "forward_backward_ms": round(1e3 * statistics.median(both), 2),
        "forward_min_ms": round(1e3 * min(fwd), 2),
        "forward_backward_min_ms": round(1e3 * min(both), 2),
        "forward_backward_runs_ms": [round(1e3 * t, 2) for t in both],
    }


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    import torch

    from segkit.backends.umamba2.mamba2 import _load_fused, mamba_ssm_importable

    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [measure("torch", "cpu", b, n, chunk, args.repeats) for b, n in SHAPES for chunk in (64, 256)]
    skipped = []
    if torch.cuda.is_available():
        kernels = ["torch", "mamba-ssm"] if mamba_ssm_importable() else ["torch"]
        if not mamba_ssm_importable():
            skipped.append(f"mamba-ssm on cuda: {_load_fused()[1]}")
        for b, n in SHAPES:
            for k in kernels:
                for chunk in (64, 256) if k == "torch" else (256,):
                    runs.append(measure(k, "cuda", b, n, chunk, args.repeats))
    else:
        skipped.append("cuda: no GPU")
    result = {"repeats": args.repeats, "runs": runs, "skipped": skipped, "machine": machine()}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"Mamba2Mixer(d_model=320), median of {args.repeats} (ms)")
    print(f"{'kernel':<10} {'device':<6} {'shape':<14} {'chunk':>5} {'forward':>9} {'fwd+bwd':>9} {'min f+b':>9}")
    for r in runs:
        shape = f"({r['batch']}, {r['tokens']}, 320)"
        print(
            f"{r['kernel']:<10} {r['device']:<6} {shape:<14} {r['chunk_size']:>5} "
            f"{r['forward_ms']:>9.2f} {r['forward_backward_ms']:>9.2f} {r['forward_backward_min_ms']:>9.2f}"
        )
    for s in skipped:
        print(f"skipped: {s}")
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()
