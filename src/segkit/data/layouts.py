"""Case-folder layouts segkit reads: file names per modality and the label convention of each release.

segkit's own convention is the BraTS 2024 post-treatment layout (``<case>-{t1c,t1n,t2f,t2w,seg}``,
labels 1 NETC, 2 SNFH, 3 ET, 4 RC). Other releases come in only when named (``--layout``); a layout
is never guessed silently, but a folder in another known layout is recognised so that the error can
say which flag reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from segkit.conventions import LABELS, MODALITIES, SEG_SUFFIX

LayoutName = Literal["brats2024", "brats2021"]

CASE_FILE_SUFFIXES: Final = (".nii.gz", ".nii")
"""Suffixes a case file may have, preferred first (nnU-Net datasets always get ``.nii.gz``)."""


@dataclass(frozen=True)
class Layout:
    """How one BraTS release names a case's files and numbers its labels.

    Attributes:
        name: The ``--layout`` value.
        title: What the layout is, for messages.
        separator: Between the case id and the file token (``-`` or ``_``).
        tokens: segkit modality (t1c, t1n, t2f, t2w, seg) -> token in the file name.
        raw_labels: Label value in the files -> its name (background included).
        to_segkit: Label value in the files -> label written into an nnU-Net dataset; identity when empty.
            nnU-Net needs consecutive labels, so a release with gaps (2021: 0, 1, 2, 4) is renumbered.
        labels: Label names written to ``dataset.json`` -> value (after `to_segkit`).
    """

    name: LayoutName
    title: str
    separator: str
    tokens: Mapping[str, str]
    raw_labels: Mapping[int, str]
    to_segkit: Mapping[int, int]
    labels: Mapping[str, int]

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # Layouts are module-level singletons (their mappings are read-only proxies, which do not pickle):
        # worker processes get them back by name.
        return get_layout, (self.name,)

    def file_name(self, case_id: str, kind: str, suffix: str = CASE_FILE_SUFFIXES[0]) -> str:
        """File name of a modality (or ``"seg"``) of `case_id`, e.g. ``BraTS2021_00000_t1ce.nii.gz``."""
        return f"{case_id}{self.separator}{self.tokens[kind]}{suffix}"

    def describe(self) -> str:
        """One line: the file names and the labels."""
        files = ", ".join(f"{self.separator}{self.tokens[k]}" for k in (*MODALITIES, SEG_SUFFIX))
        labels = ", ".join(f"{v} {n}" for v, n in self.raw_labels.items() if v)
        return f"{self.title} (files <case>{{{files}}}, labels {labels})"


BRATS2024: Final = Layout(
    name="brats2024",
    title="BraTS 2024 post-treatment layout",
    separator="-",
    tokens=MappingProxyType({k: k for k in (*MODALITIES, SEG_SUFFIX)}),
    raw_labels=LABELS,
    to_segkit=MappingProxyType({}),
    labels=MappingProxyType({name: value for value, name in LABELS.items()}),
)

BRATS2021: Final = Layout(
    name="brats2021",
    title="BraTS 2021 layout",
    separator="_",
    tokens=MappingProxyType({"t1c": "t1ce", "t1n": "t1", "t2f": "flair", "t2w": "t2", SEG_SUFFIX: "seg"}),
    raw_labels=MappingProxyType({0: "background", 1: "NCR", 2: "ED", 4: "ET"}),
    # Label 4 (ET) becomes 3 so that the labels are consecutive and ET has the number it has in 2024.
    to_segkit=MappingProxyType({0: 0, 1: 1, 2: 2, 4: 3}),
    labels=MappingProxyType({"background": 0, "NCR": 1, "ED": 2, "ET": 3}),
)

LAYOUTS: Final[Mapping[str, Layout]] = MappingProxyType({layout.name: layout for layout in (BRATS2024, BRATS2021)})


def get_layout(name: str) -> Layout:
    """The layout called `name` (validated by the config models, so a KeyError is a bug)."""
    return LAYOUTS[name]
