"""Discovery of BraTS case folders under one or more data roots.

A data root holds one folder per case, ``<root>/<case>/<case>-{t1c,t1n,t2f,t2w}.nii.gz`` plus
``<case>-seg.nii.gz`` for labelled cases (``.nii`` works too; other releases' names come in through a
`Layout`). Discovery only lists files; it never opens or changes them. Hidden entries and the
``__MACOSX`` folders that macOS's archiver adds are ignored, and so is a sub-folder that is a data root
of its own (it holds a ``.segkit-synth.json`` manifest, like the ``unlabelled/`` cohort that
``segkit data synth --unlabelled`` writes inside its output): pass such a root explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segkit.conventions import MODALITIES, SEG_SUFFIX
from segkit.data.layouts import BRATS2024, CASE_FILE_SUFFIXES, LAYOUTS, Layout
from segkit.errors import DataError

_IGNORED_FOLDERS = frozenset({"__MACOSX"})
SYNTH_MANIFEST = ".segkit-synth.json"
"""Hidden manifest of a root that `segkit data synth` wrote; a sub-folder holding one is a nested root."""


def ignored(entry: Path) -> bool:
    """Entries discovery skips: hidden ones (``.DS_Store``, ``._x``) and macOS archive folders."""
    return entry.name.startswith(".") or entry.name in _IGNORED_FOLDERS


@dataclass(frozen=True)
class Case:
    """One BraTS case folder and the files found in it.

    Attributes:
        case_id: The folder name, e.g. ``BraTS-GLI-00001-000``.
        root: The data root the case was found under.
        folder: ``root / case_id``.
        images: Modality -> file, for the modalities that exist.
        seg: The label file, or None for an unlabelled case.
        stray: Files in the folder that are neither a modality nor the label file.
        unusable: Modality (or ``"seg"``) -> (path, why) for an entry with the right name that cannot be
            read as that file: a folder, a dangling link, or both a ``.nii`` and a ``.nii.gz``.
        layout: The layout the folder was read with.
        other_layout: The name of another known layout whose files the folder holds instead, if any.
    """

    case_id: str
    root: Path
    folder: Path
    images: Mapping[str, Path]
    seg: Path | None = None
    stray: tuple[Path, ...] = ()
    unusable: Mapping[str, tuple[Path, str]] = field(default_factory=dict)
    layout: Layout = BRATS2024
    other_layout: str | None = None

    @property
    def labelled(self) -> bool:
        """Whether the case has a label file."""
        return self.seg is not None

    @property
    def missing_modalities(self) -> tuple[str, ...]:
        """Modalities with no entry at all (an unusable entry is in `unusable` instead)."""
        return tuple(m for m in MODALITIES if m not in self.images and m not in self.unusable)

    def expected_file(self, modality: str) -> Path:
        """Where the file of `modality` (or ``"seg"``) should be."""
        return self.folder / self.layout.file_name(self.case_id, modality)

    def file_problems(self, *, require_label: bool = False) -> list[tuple[Path, str]]:
        """(path, problem) for each file that is absent or unusable, modalities first, then the label."""
        if self.other_layout is not None and not self.images:
            other = LAYOUTS[self.other_layout]
            why = f"holds the {other.describe()}, not the {self.layout.title}; pass --layout {other.name}"
            return [(self.folder, why)]
        out = [(self.expected_file(m), f"missing modality {m}") for m in self.missing_modalities]
        out += [self.unusable[k] for k in (*MODALITIES, SEG_SUFFIX) if k in self.unusable]
        if require_label and self.seg is None and SEG_SUFFIX not in self.unusable:
            out.append((self.expected_file(SEG_SUFFIX), "missing segmentation"))
        return out

    def files(self) -> list[Path]:
        """All modality files present, then the label file if any."""
        out = [self.images[m] for m in MODALITIES if m in self.images]
        return [*out, self.seg] if self.seg is not None else out


@dataclass(frozen=True)
class Discovery:
    """What `discover_cases` found.

    Attributes:
        roots: The roots searched, in order.
        cases: Every case folder found, in root order then sorted by id.
        stray: Files directly inside a root (roots hold case folders only).
        duplicates: Case id -> folders, for ids found more than once.
        nested: Sub-folders of a root that are data roots themselves (skipped, see `is_nested_root`).
    """

    roots: tuple[Path, ...]
    cases: tuple[Case, ...]
    stray: tuple[Path, ...] = ()
    duplicates: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    nested: tuple[Path, ...] = ()

    def by_id(self) -> dict[str, Case]:
        """Case id -> case (the first one found for duplicated ids)."""
        out: dict[str, Case] = {}
        for case in self.cases:
            out.setdefault(case.case_id, case)
        return out


def is_nested_root(folder: Path) -> bool:
    """Whether a folder inside a data root is a data root of its own (a synthesised one), not a case."""
    return (folder / SYNTH_MANIFEST).is_file()


def _expected_names(case_id: str, layout: Layout) -> dict[str, str]:
    return {
        layout.file_name(case_id, kind, suffix): kind
        for kind in (*MODALITIES, SEG_SUFFIX)
        for suffix in CASE_FILE_SUFFIXES
    }


def _unusable_reason(entry: Path) -> str | None:
    """Why an entry named like a case file is not one, or None when it is a (link to a) regular file."""
    if entry.is_file():
        return None
    if entry.is_symlink() and not entry.exists():
        return f"is a dangling link (to {entry.readlink()})"
    if entry.is_dir():
        return "is a folder, not a NIfTI file"
    return "is not a regular file"


def scan_case_folder(folder: Path, root: Path | None = None, *, layout: Layout = BRATS2024) -> Case:
    """Describe one case folder: which modality and label files it holds, named as `layout` names them."""
    case_id = folder.name
    expected = _expected_names(case_id, layout)
    found: dict[str, list[Path]] = {}
    stray: list[Path] = []
    entries = [e for e in sorted(folder.iterdir()) if not ignored(e)]
    for entry in entries:
        kind = expected.get(entry.name)
        if kind is None:
            stray.append(entry)
        else:
            found.setdefault(kind, []).append(entry)
    files: dict[str, Path] = {}
    unusable: dict[str, tuple[Path, str]] = {}
    for kind, paths in found.items():
        if len(paths) > 1:
            names = " and ".join(p.name for p in paths)
            unusable[kind] = (paths[0], f"both {names} exist; keep one")
        elif (reason := _unusable_reason(paths[0])) is not None:
            unusable[kind] = (paths[0], reason)
        else:
            files[kind] = paths[0]
    seg = files.pop(SEG_SUFFIX, None)
    other = None
    if not found:
        present = {e.name for e in entries}
        other = next(
            (o.name for o in LAYOUTS.values() if o is not layout and present & set(_expected_names(case_id, o))),
            None,
        )
    return Case(
        case_id,
        root if root is not None else folder.parent,
        folder,
        files,
        seg,
        tuple(stray),
        unusable,
        layout,
        other,
    )


def discover_cases(roots: Sequence[Path], *, layout: Layout = BRATS2024) -> Discovery:
    """Find the case folders under each root.

    Args:
        roots: Data roots, searched in order. Hidden entries (``.name``) and ``__MACOSX`` are ignored.
        layout: How the case files are named.

    Raises:
        DataError: If a root does not exist or is not a folder.
    """
    cases: list[Case] = []
    stray: list[Path] = []
    nested: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            msg = f"{root}: data root not found"
            raise DataError(msg)
        if not root.is_dir():
            msg = f"{root}: data root is not a folder"
            raise DataError(msg)
        for entry in sorted(root.iterdir()):
            if ignored(entry):
                continue
            if entry.is_dir() and is_nested_root(entry):
                nested.append(entry)
            elif entry.is_dir():
                cases.append(scan_case_folder(entry, root, layout=layout))
            else:
                stray.append(entry)
    seen: dict[str, list[Path]] = {}
    for case in cases:
        seen.setdefault(case.case_id, []).append(case.folder)
    duplicates = {cid: tuple(folders) for cid, folders in seen.items() if len(folders) > 1}
    return Discovery(tuple(Path(r) for r in roots), tuple(cases), tuple(stray), duplicates, tuple(nested))


def existing_roots(candidates: Iterable[str | Path]) -> list[Path]:
    """The candidates that exist as folders (used for the default roots)."""
    return [Path(c) for c in candidates if Path(c).is_dir()]
