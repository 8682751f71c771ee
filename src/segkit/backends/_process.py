"""Run framework code in a child process with an explicit environment, streaming events back.

Some frameworks read configuration from environment variables when they are imported (nnU-Net reads
``nnUNet_def_n_proc`` at import) and start ``spawn`` process pools that need a ``__main__`` guard.
Running them in a child process started with an explicit ``env=`` keeps the segkit process free of
global state. The child writes JSON event lines on its original stdout; everything the framework
prints (stdout, stderr, its worker processes) goes to a log file.

Child side::

    if __name__ == "__main__":
        worker_main({"train": train_handler})   # handler(payload, emit) -> result dict

Parent side::

    result = run_worker("segkit.backends.nnunet.worker", "train", payload, env=env, log_file=log,
                        on_event=handle)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from segkit.errors import BackendRuntimeError, SegkitError

Emit = Callable[..., None]
Handler = Callable[[dict[str, Any], Emit], dict[str, Any]]

EXIT_USER_ERROR = 3


def run_worker(
    module: str,
    action: str,
    payload: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    log_file: Path,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    what: str = "the framework",
) -> dict[str, Any]:
    """Run ``python -m <module> <payload.json>`` and return the result the child reports.

    Args:
        module: Child entry module (calls `worker_main`).
        action: Handler name in the child.
        payload: JSON-serialisable arguments for the handler.
        env: The child's complete environment.
        log_file: Appended with everything the child prints.
        on_event: Called with each progress event (a dict with an ``"event"`` key).
        what: Name of the work for error messages, e.g. ``"nnU-Net training"``.

    Raises:
        SegkitError: The child reported a user-facing error (same class family and message).
        BackendRuntimeError: The child failed otherwise; the message quotes the log's last error line.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd, payload_path = tempfile.mkstemp(prefix=".segkit-worker-", suffix=".json", dir=log_file.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump({"action": action, "payload": payload}, fh, default=str)
    cmd = [sys.executable, "-m", module, payload_path]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    try:
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                # Its own process group, so that stopping it also stops the pools the framework spawned.
                start_new_session=True,
            )
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    event = _parse(line)
                    if event is None:
                        continue
                    kind = event.get("event")
                    if kind == "result":
                        result = event.get("data", {})
                    elif kind == "error":
                        error = event
                    elif on_event is not None:
                        on_event(event)
                returncode = proc.wait()
            except BaseException:
                _stop(proc)
                raise
    finally:
        Path(payload_path).unlink(missing_ok=True)
    if error is not None:
        raise _rebuild_error(error, log_file)
    if returncode != 0 or result is None:
        last = _last_error_line(log_file)
        msg = f"{what} failed (exit code {returncode})" + (f": {last}" if last else "")
        raise BackendRuntimeError(msg, hint=f"full log: {log_file}")
    return result


def _parse(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _stop(proc: subprocess.Popen[str]) -> None:
    """Interrupt the child's process group like Ctrl-C would, then kill the group if it does not stop."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)
    except (subprocess.TimeoutExpired, OSError):
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _rebuild_error(event: Mapping[str, Any], log_file: Path) -> SegkitError:
    from segkit import errors

    cls = getattr(errors, str(event.get("kind", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, SegkitError)):
        cls = BackendRuntimeError
    hint = event.get("hint") or f"full log: {log_file}"
    message = str(event.get("message", "unknown error"))
    if event.get("bare"):
        bare = message.rstrip(": ")
        last = _last_error_line(log_file, ignore=bare)
        message = f"{bare} ({last})" if last else bare
    return cls(message, hint=hint)


def _last_error_line(log_file: Path, *, ignore: str = "") -> str:
    """The last line of the log that looks like an exception message (other than `ignore` itself)."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines[-400:]):
        if line.startswith("  "):  # a traceback's "  File ..." and source lines, not a message
            continue
        text = line.strip()
        if text.rstrip(":") == ignore:
            continue
        if text and ("Error" in text or "error:" in text or "Exception" in text):
            return text[:300]
    return ""


def worker_main(handlers: Mapping[str, Handler]) -> None:
    """Child entry point: redirect prints to the log, run one handler, report its result or error."""
    events: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    # From here on fd 1 is the log (the parent passed the log as stderr): framework prints, tqdm bars
    # and spawned pool workers all land there, and only JSON events reach the parent.
    os.dup2(2, 1)

    def emit(event: str, **data: Any) -> None:
        events.write(json.dumps({"event": event, **data}, default=str) + "\n")
        events.flush()

    code = 0
    try:
        with open(sys.argv[1]) as fh:
            request = json.load(fh)
        handler = handlers[request["action"]]
        result = handler(request["payload"], emit)
        emit("result", data=result)
    except SegkitError as err:
        emit("error", kind=type(err).__name__, message=str(err), hint=err.hint)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        emit("error", kind="BackendRuntimeError", message="interrupted")
        code = 130
    except BaseException as err:  # report, then keep the traceback in the log
        traceback.print_exc()
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        # A bare exception (e.g. nnU-Net's "background workers died") says nothing; the parent then
        # quotes the log, where the pool worker printed the real cause.
        emit("error", kind="BackendRuntimeError", message=f"{type(err).__name__}: {first}"[:500], bare=not first)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        events.close()
    raise SystemExit(code)
