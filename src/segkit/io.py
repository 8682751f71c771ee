"""File I/O shared by every command: NIfTI volumes, atomic writes, staged directories, links.

Every output segkit writes goes through `atomic_path` (a temp file beside the target, with the same
suffixes so that nibabel/imageio/matplotlib infer the format, moved into place with `os.replace`) or
through `staged_dir` (a directory built beside the target and renamed into place when complete). A
crash therefore never leaves a half-written file or a half-built dataset behind.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import numpy as np

from segkit.conventions import MAX_LABEL
from segkit.errors import ConfigError, DataError, OutputError

if TYPE_CHECKING:
    from segkit.types import Affine, Shape3, Spacing

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_COMPOUND_SUFFIXES = (".nii.gz", ".tar.gz", ".tar.bz2")

AFFINE_TOLERANCE: Final = 1e-4
"""Default largest difference between two affines' entries (mm) for them to describe the same grid."""


NAME_MAX: Final = 255
"""Longest file or folder name, in bytes, on the file systems segkit writes to (ext4, xfs, btrfs, APFS)."""


def check_name_length(path: Path) -> Path:
    """Return `path` unless one of its names is longer than `NAME_MAX` bytes (a usage error, exit 2).

    Without this check such a path fails deep inside a writer (or in `Path.exists`) with
    ``ENAMETOOLONG`` and a traceback.

    Raises:
        ConfigError: Naming the start of the long name and its length.
    """
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            start = part[:40]
            msg = f"{start}...: name too long ({size} bytes; file names may have at most {NAME_MAX})"
            raise ConfigError(msg, hint="choose a shorter output name")
    return Path(path)


def _short_temp_name(stem: str, room: int) -> str:
    """`stem` cut to at most `room` bytes of UTF-8 (never splitting a character), for temporary names."""
    return os.fsencode(stem)[: max(room, 0)].decode("utf-8", errors="ignore")


def split_suffix(name: str) -> tuple[str, str]:
    """Split a file name into (stem, suffix), treating ``.nii.gz`` and friends as one suffix."""
    for compound in _COMPOUND_SUFFIXES:
        if name.endswith(compound) and len(name) > len(compound):
            return name[: -len(compound)], compound
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, f".{ext}"


@contextlib.contextmanager
def atomic_path(dest: Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; move it over `dest` when the block succeeds.

    The temporary file keeps the suffixes of `dest` (``.case.x1y2.tmp.nii.gz``) so that writers that
    pick a format from the extension work unchanged. On any exception the temporary file is removed
    and `dest` is untouched.

    Args:
        dest: Final location of the file.
        fsync: Flush the file to disk before the rename (for small, precious result files).

    Raises:
        ConfigError: A name in `dest` is longer than `NAME_MAX` bytes.
        OutputError: If the parent folder cannot be created or written.
    """
    dest = check_name_length(Path(dest))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stem, suffix = split_suffix(dest.name)
        # ".<stem>.<8 random>.tmp<suffix>" must fit NAME_MAX too, so a long (legal) name gets a shorter stem.
        room = NAME_MAX - len(os.fsencode(suffix)) - len(".tmp") - 2 - 8
        fd, tmp_name = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{_short_temp_name(stem, room)}.", suffix=f".tmp{suffix}"
        )
    except OSError as err:
        msg = f"{dest.parent}: cannot write here ({err.strerror or err})"
        raise OutputError(msg) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        try:
            os.replace(tmp, dest)
        except OSError as err:
            # Typically `dest` is an existing folder, or the folder turned read-only meanwhile.
            msg = f"{dest}: cannot write the file ({err.strerror or err})"
            raise OutputError(msg) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back; do it once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(dest: Path, text: str) -> Path:
    """Write `text` to `dest` atomically (UTF-8) and return `dest`."""
    with atomic_path(dest, fsync=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def json_text(obj: Any, *, pretty: bool = True) -> str:
    """`obj` as JSON text ending in a newline: paths and numpy values converted (`json_default`).

    NaN and infinities are written as JSON ``NaN``/``Infinity`` (Python's json convention, which
    nnU-Net's summary.json also uses).
    """
    return json.dumps(obj, indent=2 if pretty else None, sort_keys=False, default=json_default) + "\n"


def write_json(dest: Path, obj: Any, *, pretty: bool = True) -> Path:
    """Write `obj` as JSON (see `json_text`) to `dest` atomically and return `dest`."""
    return write_text(dest, json_text(obj, pretty=pretty))


def json_default(obj: Any) -> Any:
    """`json.dumps` fallback for paths and numpy scalars/arrays."""
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    msg = f"Object of type {type(obj).__name__} is not JSON serializable"
    raise TypeError(msg)


def read_json(path: Path) -> Any:
    """Read a JSON file, raising `DataError` that names the file when it is missing or malformed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        msg = f"{path}: file not found"
        raise DataError(msg) from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"{path}: not valid JSON ({err})"
        raise DataError(msg) from err


@contextlib.contextmanager
def staged_dir(dest: Path) -> Iterator[Path]:
    """Build a directory beside `dest` and put it in place of `dest` when the block succeeds.

    The block fills a fresh hidden folder ``.<name>.partial-<id>``. On success an existing `dest` is
    moved aside, the new folder renamed to `dest` and the old one deleted; on failure the partial
    folder is deleted and `dest` is untouched.

    Raises:
        ConfigError: The name of `dest` is longer than `NAME_MAX` bytes.
        OutputError: If the parent folder cannot be created or written.
    """
    dest = check_name_length(Path(dest))
    tag = uuid.uuid4().hex[:8]
    # ".<name>.partial-<tag>" / ".<name>.old-<tag>" must fit NAME_MAX: a long name is shortened here.
    short = _short_temp_name(dest.name, NAME_MAX - len(".") - len(".partial-") - len(tag))
    staging = dest.parent / f".{short}.partial-{tag}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as err:
        msg = f"{dest.parent}: cannot write here ({err.strerror or err})"
        raise OutputError(msg) from err
    try:
        yield staging
        old = dest.parent / f".{short}.old-{tag}"
        if dest.exists():
            os.replace(dest, old)
        os.replace(staging, dest)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def link_or_copy(src: Path, dst: Path) -> Literal["link", "copy"]:
    """Hard-link `src` to `dst`, falling back to a copy where the filesystem refuses links.

    Returns:
        ``"link"`` or ``"copy"``, whichever was done.
    """
    try:
        os.link(src, dst)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        shutil.copy2(src, dst)
        return "copy"
    return "link"


_STALE_EMPTY_CLAIM_S: Final = 60.0
"""An empty claim file older than this is from a run killed between creating and filling it."""


@contextlib.contextmanager
def exclusive_claim(path: Path, *, what: str, hint: str) -> Iterator[None]:
    """Hold `path` as a claim file for the block: created with ``O_EXCL``, so one process at a time wins.

    The file records the holder (host, process id, a random token); it is removed when the block ends,
    however it ends. A claim left behind by a process that no longer runs on this host (killed, power
    loss) is taken over; a live holder, or one on another host, makes this raise at once.

    Args:
        path: The claim file (its folder must exist).
        what: What is claimed, for the message (``"dataset number 501"``).
        hint: The hint of the error.

    Raises:
        OutputError: Another live process holds the claim, or the file cannot be created.
    """
    import socket

    host = socket.gethostname()
    record: dict[str, Any] = {"host": host, "pid": os.getpid(), "token": uuid.uuid4().hex}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_claim(path)
            if _claim_is_stale(path, holder, host):
                _break_claim(path, holder)
                continue
            who = f" (process {holder['pid']} on {holder['host']})" if holder else ""
            msg = f"{path.parent}: {what} is being claimed by another segkit run{who}"
            raise OutputError(msg, hint=f"{hint} (a claim left by a crashed run elsewhere: remove {path})") from None
        except OSError as err:
            msg = f"{path.parent}: cannot write here ({err.strerror or err})"
            raise OutputError(msg) from err
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        break
    else:  # pragma: no cover - only when stale claims keep reappearing
        msg = f"{path}: could not claim {what}"
        raise OutputError(msg, hint=hint)
    try:
        yield
    finally:
        if _read_claim(path) == record:  # never remove a claim that someone else took over
            path.unlink(missing_ok=True)


def _read_claim(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("pid"), int) and isinstance(data.get("host"), str)
    return data if ok else None


def _claim_is_stale(path: Path, holder: dict[str, Any] | None, host: str) -> bool:
    if holder is None:  # being written right now, or left empty by a crash
        try:
            return time.time() - path.stat().st_mtime > _STALE_EMPTY_CLAIM_S
        except FileNotFoundError:
            return True
    if holder["host"] != host:
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def _break_claim(path: Path, holder: dict[str, Any] | None) -> None:
    """Remove a stale claim without ever removing a fresh one that another process just created."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process broke it first
    if _read_claim(aside) != holder:
        # Between our read and the rename someone replaced the claim: put theirs back (link: never clobbers).
        with contextlib.suppress(OSError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


@dataclass(frozen=True)
class Header:
    """Geometry of a NIfTI file, read without loading its voxels."""

    path: Path
    shape: tuple[int, ...]
    affine: Affine
    spacing: tuple[float, ...]
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class Volume:
    """A loaded 3-D NIfTI volume: voxels (X, Y, Z) in stored order plus geometry."""

    path: Path
    data: np.ndarray
    affine: Affine
    form_mismatch: str | None = None
    """How the header's qform and sform disagree, when both are set and differ (see `form_mismatch`)."""

    @property
    def shape(self) -> Shape3:
        """Voxels along X, Y, Z."""
        x, y, z = self.data.shape[:3]
        return (int(x), int(y), int(z))

    @property
    def spacing(self) -> Spacing:
        """Millimetres per voxel along X, Y, Z, from the affine's column norms."""
        sx, sy, sz = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(sx), float(sy), float(sz))


def _load_image(path: Path) -> Any:
    import nibabel as nib

    if not path.is_file():
        if path.is_symlink() and not path.exists():
            msg = f"{path}: is a dangling link (to {path.readlink()})"
        elif path.is_dir():
            msg = f"{path}: is a folder, not a NIfTI file"
        else:
            msg = f"{path}: file not found"
        raise DataError(msg)
    try:
        return nib.load(str(path))
    except Exception as err:
        msg = f"{path}: not a readable NIfTI file ({_reason(err)})"
        raise DataError(msg) from err


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def read_header(path: Path) -> Header:
    """Read the geometry of a NIfTI file without decompressing its voxels.

    Raises:
        DataError: If the file is missing or its header is unreadable.
    """
    path = Path(path)
    img = _load_image(path)
    zooms = tuple(float(z) for z in img.header.get_zooms())
    return Header(
        path,
        tuple(int(s) for s in img.shape),
        np.asarray(img.affine, dtype=np.float64),
        zooms,
        np.dtype(img.get_data_dtype()),
    )


def read_volume(path: Path, *, dtype: Any = None) -> Volume:
    """Load a 3-D NIfTI volume.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        dtype: Convert the voxels to this dtype (default: the stored dtype, scaled if the header says so).

    Raises:
        DataError: If the file is missing, truncated, unreadable or not 3-D. The message names the file.
    """
    path = Path(path)
    img = _load_image(path)
    # The header's shape, not the array's: nibabel returns shape (0,) for a (32, 32, 0) image.
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        msg = f"{path}: expected a 3-D volume, found shape {shape}"
        raise DataError(msg)
    if 0 in shape:
        msg = f"{path}: the image has no voxels (shape {shape})"
        raise DataError(msg)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:
        msg = f"{path}: cannot read voxels, the file is truncated or corrupt ({_reason(err)})"
        raise DataError(msg) from err
    data = data.reshape(shape)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return Volume(path, data, np.asarray(img.affine, dtype=np.float64), form_mismatch(img))


def form_mismatch(img: Any, tol: float = AFFINE_TOLERANCE) -> str | None:
    """How a NIfTI image's qform and sform disagree, or None when they agree or only one is set.

    nibabel (and segkit) use the sform, while some viewers and ITK-based tools prefer the qform, so two
    forms that disagree mean the same file is placed differently by different tools.
    """
    qform, qcode = img.get_qform(coded=True)
    sform, scode = img.get_sform(coded=True)
    if not qcode or not scode or qform is None or sform is None:
        return None
    if not (np.all(np.isfinite(qform)) and np.all(np.isfinite(sform))):
        return None  # a non-finite affine is its own, worse problem; callers report that
    deviation = float(np.abs(np.asarray(qform) - np.asarray(sform)).max())
    if deviation <= tol:
        return None
    what = _affine_difference(np.asarray(qform, np.float64), np.asarray(sform, np.float64), tol)
    return f"qform and sform disagree: {what} (largest difference {deviation:.3g} > tolerance {tol:g})"


class Grid(Protocol):
    """Anything with a voxel grid: a `Volume` or a `Header`."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Voxels along X, Y, Z (further axes are ignored)."""
        ...

    @property
    def affine(self) -> Affine:
        """(4, 4) voxel-to-world matrix (mm)."""
        ...


def grid_mismatch(a: Grid, b: Grid, tol: float = AFFINE_TOLERANCE) -> str | None:
    """How the voxel grid of `a` differs from that of `b`, or None when both describe the same grid.

    Two files are on the same grid when their shapes (X, Y, Z) are equal and no entry of their affines
    differs by more than `tol`. The description says what differs, e.g. ``"shape (30, 32, 32) vs
    (32, 32, 32)"`` or ``"origin shifted by 30 mm (largest affine difference 30 > tolerance 0.0001)"``;
    callers prefix the file names.
    """
    shape_a = tuple(int(n) for n in a.shape[:3])
    shape_b = tuple(int(n) for n in b.shape[:3])
    if shape_a != shape_b:
        return f"shape {shape_a} vs {shape_b}"
    affine_a = np.asarray(a.affine, dtype=np.float64)
    affine_b = np.asarray(b.affine, dtype=np.float64)
    deviation = float(np.abs(affine_a - affine_b).max())
    if deviation <= tol:  # written so that a NaN affine is a mismatch
        return None
    what = _affine_difference(affine_a, affine_b, tol)
    return f"{what} (largest affine difference {deviation:.3g} > tolerance {tol:g})"


def _affine_difference(a: Affine, b: Affine, tol: float) -> str:
    """What makes two affines differ: voxel size, axis directions and/or origin."""
    size_a, size_b = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    parts = []
    if not np.abs(size_a - size_b).max() <= tol:
        parts.append(f"voxel size {_mm(size_a)} mm vs {_mm(size_b)} mm")
    with np.errstate(divide="ignore", invalid="ignore"):
        directions_differ = not np.abs(a[:3, :3] / size_a - b[:3, :3] / size_b).max() <= tol
    if directions_differ:
        parts.append("axis directions differ")
    shift = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    if not shift <= tol:
        parts.append(f"origin shifted by {shift:.3g} mm")
    return ", ".join(parts) or "affines differ"


def _mm(size: np.ndarray) -> str:
    return "x".join(f"{float(s):.4g}" for s in size)


def label_problem(data: np.ndarray) -> str | None:
    """Why `data` is not a BraTS label map, or None when it is one.

    The one rule for every label map segkit reads (references, predictions, ``-seg`` files): finite,
    integer-valued (any integer or float dtype, or bool) and between 0 and `MAX_LABEL`.
    """
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            return "label map holds NaN or infinite values"
        fractional = data != np.round(data)
        if fractional.any():
            sample = ", ".join(f"{v:g}" for v in np.unique(data[fractional])[:3])
            return f"label map is not integer-valued (e.g. {sample})"
    elif not (np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_):
        return f"label map has unsupported dtype {data.dtype}"
    if data.size and (data.min() < 0 or data.max() > MAX_LABEL):
        values = np.unique(data)
        outside = ", ".join(f"{v:g}" for v in values[(values < 0) | (values > MAX_LABEL)][:5])
        return f"labels outside 0-{MAX_LABEL}: {outside}"
    return None


def as_labels(volume: Volume, *, role: str | None = None) -> Volume:
    """`volume` as a label map with uint8 voxels, after checking it with `label_problem`.

    Args:
        volume: A loaded volume.
        role: A word naming the file's part in the error message (``"reference"``, ``"prediction"``).

    Raises:
        DataError: ``[role ]<file>: <problem>``.
    """
    problem = label_problem(volume.data)
    if problem is not None:
        msg = f"{role + ' ' if role else ''}{volume.path}: {problem}"
        raise DataError(msg)
    return Volume(volume.path, volume.data.astype(np.uint8, copy=False), volume.affine)


def read_labels(path: Path, *, role: str | None = None) -> Volume:
    """Read a label map (see `label_problem`) with uint8 voxels.

    Raises:
        DataError: The file is missing, unreadable, not 3-D, or not a label map; the message names the file.
    """
    return as_labels(read_volume(path), role=role)


def write_volume(dest: Path, data: np.ndarray, affine: Affine, *, header: Any = None) -> Path:
    """Write a NIfTI volume atomically, keeping `data`'s dtype.

    Args:
        dest: Target file; ``.nii.gz`` is compressed.
        data: (X, Y, Z) array.
        affine: (4, 4) voxel-to-world matrix.
        header: Optional nibabel header to copy metadata from (its dtype is overridden by `data`'s).
    """
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64), header=header)
    img.set_data_dtype(np.asarray(data).dtype)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(Path(dest)) as tmp:
        nib.save(img, str(tmp))
    return Path(dest)


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and check that files can be created in it.

    Raises:
        ConfigError: A name in `path` is longer than `NAME_MAX` bytes.
        OutputError: If the folder cannot be created or written.
    """
    path = check_name_length(Path(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".segkit-write-test-"):
            pass
    except OSError as err:
        msg = f"{path}: output folder is not writable ({err.strerror or err})"
        raise OutputError(msg) from err
    return path


def refuse_inside(
    dest: Path,
    roots: Iterable[Path],
    *,
    what: str,
    containing: bool = False,
    hint: str = "choose an output outside the input folders",
) -> None:
    """Refuse an output location inside one of the input folders `roots` (segkit never writes into its inputs).

    Args:
        dest: The output file or folder.
        roots: Input folders (data roots, reference folders, case folders).
        what: The input's role in the message, e.g. ``"data root"``.
        containing: Also refuse a `dest` that contains a root (for outputs that may be deleted as a whole).
        hint: The hint of the error.

    Raises:
        OutputError: `dest` is, or is inside, one of `roots`.
    """
    target = Path(dest).resolve()
    for root in roots:
        r = Path(root).resolve()
        if target == r or r in target.parents or (containing and target in r.parents):
            msg = f"{dest}: the output overlaps the {what} {root}; segkit never writes into its inputs"
            raise OutputError(msg, hint=hint)


@contextlib.contextmanager
def output_dirs(folders: Iterable[Path]) -> Iterator[None]:
    """Create `folders` and check that they can be written, for a block that then writes into them.

    Checking first makes a long computation fail in seconds when its results could not be saved. The
    folders this call creates are removed again, if still empty, when the block fails, so a run that stops
    before writing anything leaves nothing behind.

    Raises:
        OutputError: A folder cannot be created or written.
    """
    created: list[Path] = []
    try:
        for folder in folders:
            folder = Path(folder)
            created += itertools.takewhile(lambda p: not p.exists(), (folder, *folder.parents))
            ensure_writable_dir(folder)
        yield
    except BaseException:
        for path in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()  # only succeeds when empty
        raise
