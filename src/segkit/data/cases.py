"""Discovery of BraTS case folders under one or more data roots.

A data root holds one folder per case, ``<root>/<case>/<case>-{t1c,t1n,t2f,t2w}.nii.gz`` plus
``<case>-seg.nii.gz`` for labelled cases. Discovery only lists files; it never opens or changes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segkit.conventions import MODALITIES, SEG_SUFFIX, modality_file
from segkit.errors import DataError


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
    """

    case_id: str
    root: Path
    folder: Path
    images: Mapping[str, Path]
    seg: Path | None = None
    stray: tuple[Path, ...] = ()

    @property
    def labelled(self) -> bool:
        """Whether the case has a label file."""
        return self.seg is not None

    @property
    def missing_modalities(self) -> tuple[str, ...]:
        """Modalities whose file is absent."""
        return tuple(m for m in MODALITIES if m not in self.images)

    def expected_file(self, modality: str) -> Path:
        """Where the file of `modality` (or ``"seg"``) should be."""
        return self.folder / modality_file(self.case_id, modality)

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
    """

    roots: tuple[Path, ...]
    cases: tuple[Case, ...]
    stray: tuple[Path, ...] = ()
    duplicates: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)

    def by_id(self) -> dict[str, Case]:
        """Case id -> case (the first one found for duplicated ids)."""
        out: dict[str, Case] = {}
        for case in self.cases:
            out.setdefault(case.case_id, case)
        return out


def scan_case_folder(folder: Path, root: Path | None = None) -> Case:
    """Describe one case folder: which modality and label files it holds."""
    case_id = folder.name
    expected = {modality_file(case_id, m): m for m in (*MODALITIES, SEG_SUFFIX)}
    images: dict[str, Path] = {}
    seg: Path | None = None
    stray: list[Path] = []
    for entry in sorted(folder.iterdir()):
        kind = expected.get(entry.name)
        if kind is None or not entry.is_file():
            if not entry.name.startswith("."):
                stray.append(entry)
        elif kind == SEG_SUFFIX:
            seg = entry
        else:
            images[kind] = entry
    return Case(case_id, root if root is not None else folder.parent, folder, images, seg, tuple(stray))


def discover_cases(roots: Sequence[Path]) -> Discovery:
    """Find the case folders under each root.

    Args:
        roots: Data roots, searched in order. Hidden entries (``.name``) are ignored.

    Raises:
        DataError: If a root does not exist or is not a folder.
    """
    cases: list[Case] = []
    stray: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            msg = f"{root}: data root not found"
            raise DataError(msg)
        if not root.is_dir():
            msg = f"{root}: data root is not a folder"
            raise DataError(msg)
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                cases.append(scan_case_folder(entry, root))
            else:
                stray.append(entry)
    seen: dict[str, list[Path]] = {}
    for case in cases:
        seen.setdefault(case.case_id, []).append(case.folder)
    duplicates = {cid: tuple(folders) for cid, folders in seen.items() if len(folders) > 1}
    return Discovery(tuple(Path(r) for r in roots), tuple(cases), tuple(stray), duplicates)


def existing_roots(candidates: Iterable[str | Path]) -> list[Path]:
    """The candidates that exist as folders (used for the default roots)."""
    return [Path(c) for c in candidates if Path(c).is_dir()]
