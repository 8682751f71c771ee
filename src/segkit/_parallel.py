"""Run independent per-case work in a local process pool, reporting progress.

Ctrl-C is the parent's business only: workers start with SIGINT blocked (a blocked signal mask survives
the spawn's fork and exec, as CPython's own resource tracker relies on), so a Ctrl-C sent to the
terminal's process group reaches the parent alone and never prints a worker traceback, even while a
worker is still importing. The parent then cancels what has not started, terminates the workers (they
unwind their current item, so its temporary files are removed, and exit; a worker still there after a
second is killed) and re-raises `KeyboardInterrupt`; the CLI turns that into one line and exit 130.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from segkit.progress import NullProgress, ProgressSink

T = TypeVar("T")
R = TypeVar("R")

MAX_AUTO_WORKERS = 8

_GRACE_S = 1.0
"""How long stopped workers get to remove their temporary files before they are killed."""

_POLL_S = 0.2
"""How often the parent wakes while waiting for workers, so a Ctrl-C is handled promptly."""


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
    threaded libraries are already loaded in the parent. On any exception in the parent (a worker's
    error, `KeyboardInterrupt`) items not yet started are cancelled and the workers are terminated
    before the exception propagates.

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
        return _map_in_pool(fn, items, n_workers, progress)
    finally:
        progress.finish()


def _map_in_pool(fn: Callable[[T], R], items: Sequence[T], n_workers: int, progress: ProgressSink) -> list[R]:
    out: list[R | None] = [None] * len(items)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=context, initializer=_init_worker)
    futures: dict[Future[R], int] = {}
    try:
        with _sigint_deferred():
            # The pool spawns its workers inside `submit`, so every worker inherits the blocked mask.
            for i, item in enumerate(items):
                futures[pool.submit(_run_item, fn, item)] = i
        pending = set(futures)
        while pending:
            # A bounded wait: an untimed one would hold off KeyboardInterrupt until a case finishes.
            done, pending = wait(pending, timeout=_POLL_S, return_when="FIRST_COMPLETED")
            for future in done:
                out[futures[future]] = future.result()
                progress.advance()
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return out  # type: ignore[return-value]


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the items not started and terminate the workers, quietly.

    Futures are cancelled only through ``shutdown(cancel_futures=True)``: the pool's manager thread then
    drops them itself, whereas cancelling them from here races with that thread, which may still try to
    set their result (``InvalidStateError: CANCELLED`` printed from a thread).
    """
    # The executor has no public way to stop running items; its process table (which `shutdown`
    # forgets, so it is read first) is the only handle.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.terminate()
    with contextlib.suppress(Exception):
        pool.shutdown(wait=True)
    # A terminated worker unwinds (see `_init_worker`); one that has not gone within the grace time
    # (stuck in a C call, or blocked writing its last result) is killed.
    deadline = time.monotonic() + _GRACE_S
    while time.monotonic() < deadline and any(_alive(process) for process in processes):
        time.sleep(0.02)
    for process in processes:
        if _alive(process):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                process.kill()
    # Reaped before returning, so that no worker outlives the call (the caller may exit or check at once).
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError, AssertionError):
            process.join(timeout=5.0)


def _alive(process: Any) -> bool:
    try:
        return bool(process.is_alive())
    except (OSError, ValueError, AttributeError, AssertionError):  # closed or not started: nothing to stop
        return False


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT back while workers are spawned; one that arrives meanwhile is raised afterwards.

    Two parts: the blocked mask is what the spawned workers inherit; the recording handler keeps this
    process from raising `KeyboardInterrupt` mid-spawn (which would leave a worker reading a half-written
    start-up pipe), since another thread that does not block SIGINT (rich's display) can still receive it.
    """
    arrived: list[int] = []
    in_main = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum)) if in_main else None
    masked = hasattr(signal, "pthread_sigmask")  # Windows has no signal masks (and spawns differently)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if masked else set()
    try:
        yield
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if in_main:
            # None: the old handler was installed outside Python; the default is the closest match.
            signal.signal(signal.SIGINT, signal.SIG_DFL if handler is None else handler)
    if arrived:
        raise KeyboardInterrupt


def _init_worker() -> None:
    """Worker initializer: Ctrl-C is the parent's (see the module docstring); SIGTERM unwinds.

    The parent stops running items with SIGTERM. Raising `SystemExit` for it (instead of dying on the
    spot) runs the item's ``finally`` blocks, so `segkit.io.atomic_path` and `staged_dir` remove their
    temporary files and nothing partial is left beside the outputs.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.unraisablehook = _unraisable_while_stopping


def _unraisable_while_stopping(unraisable: Any) -> None:
    """A SIGTERM that lands inside a ``__del__`` cannot unwind from there: Python would print "Exception
    ignored" (a traceback on the user's terminal) and carry on with the item. Stay quiet and deliver the
    signal again, so that the worker still unwinds at the next ordinary point."""
    if _stopping and isinstance(unraisable.exc_value, SystemExit):
        os.kill(os.getpid(), signal.SIGTERM)
        return
    sys.__unraisablehook__(unraisable)


_stopping = False
"""Set in a worker by the parent's SIGTERM."""


def _exit_on_sigterm(signum: int, frame: object) -> None:
    global _stopping  # per-process state of a worker, set from its signal handler
    _stopping = True
    raise SystemExit(128 + signum)


def _run_item(fn: Callable[[T], R], item: T) -> R:
    """Run one item in a worker; once stopped, leave at once instead of taking the next queued item."""
    try:
        return fn(item)
    except SystemExit:
        if _stopping:  # the item's finally blocks have run; the pool would otherwise start another
            os._exit(128 + signal.SIGTERM)
        raise
