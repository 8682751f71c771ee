"""Run independent per-case work in a local process pool, reporting progress."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

from segkit.progress import NullProgress, ProgressSink

T = TypeVar("T")
R = TypeVar("R")

MAX_AUTO_WORKERS = 8


def resolve_workers(workers: int, n_items: int) -> int:
    """Number of processes to use: `workers` if positive, else one per core (at most 8), never more than items."""
    if workers <= 0:
        workers = min(os.cpu_count() or 1, MAX_AUTO_WORKERS)
    return max(1, min(workers, n_items))


def map_cases(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int = 0,
    progress: ProgressSink | None = None,
    description: str = "working",
) -> list[R]:
    """Apply `fn` to every item and return the results in input order.

    With one worker (or one item) the work runs in this process; otherwise in a pool of spawned
    processes, so `fn` and the items must be picklable (a module-level function or a
    `functools.partial` of one). Spawned rather than forked workers are safe when torch or other
    threaded libraries are already loaded in the parent.

    Args:
        fn: The per-item function.
        items: The inputs.
        workers: Process count; 0 picks one per core (at most 8).
        progress: Receives one `advance` per finished item.
        description: Progress label.
    """
    progress = progress or NullProgress()
    n_workers = resolve_workers(workers, len(items))
    progress.start(description, total=len(items))
    try:
        if n_workers == 1:
            results = []
            for item in items:
                results.append(fn(item))
                progress.advance()
            return results
        out: list[R | None] = [None] * len(items)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            try:
                for future in as_completed(futures):
                    out[futures[future]] = future.result()
                    progress.advance()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return out  # type: ignore[return-value]
    finally:
        progress.finish()
