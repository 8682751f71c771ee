"""Lesion-wise protocols as plug-ins: what each one scores, with which options, under which names.

A `Protocol` declares its regions (per variant), the per-region keys of its results, the per-case table
columns, the two headline keys (figure and console), the `EvalConfig` options that belong to it, and
scores one case. The evaluation (`segkit.evaluation`) iterates over what the chosen protocols declare and
names none of them. Register a new protocol in `PROTOCOLS`.

This module imports no numerical code at import time (the config schema reads `PROTOCOLS`); each
protocol imports its implementation when it scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

    from segkit.config.models import EvalConfig


@dataclass(frozen=True)
class Region:
    """A region of a protocol variant: its name and the labels whose union it is."""

    name: str
    labels: tuple[int, ...]

    @property
    def aggregate(self) -> bool:
        """Whether the region merges several labels (WT, TC, ...): kept unless aggregates are omitted."""
        return len(self.labels) > 1


@dataclass
class ProtocolScores:
    """One protocol's results for one case.

    Attributes:
        regions: Region -> the protocol's per-region keys (`Protocol.keys`) -> value (undefined: NaN).
        table: Per-case table columns (`Protocol.columns`) -> value.
        report: Extra per-case entries of the lesion report (per-lesion tables, the penalty used, ...).
        info: Per-case facts the run reports once (``hd95_penalty``/``penalty_rule`` of the 2024 protocol).
    """

    regions: dict[str, dict[str, float]]
    table: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Protocol:
    """The plug-in interface: subclasses fill in the class attributes and `score`.

    Attributes:
        name: The ``--protocol`` name.
        title: One line for the help text and the reports.
        options: `EvalConfig` fields that belong to this protocol (refused for a run without it).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()
    report_table: ClassVar[bool] = False
    """Whether the lesion report repeats the per-case table (when it is not just `keys` by region)."""
    console: ClassVar[tuple[tuple[str, str, int], ...]]
    """Console table columns: (title, per-region table stem, digits)."""

    def keys(self) -> tuple[str, ...]:
        """Per-region result keys, in report order."""
        raise NotImplementedError

    def variant(self, cfg: EvalConfig) -> str:
        """The variant (config) in use; the default protocol has one."""
        return "default"

    def variants(self) -> tuple[str, ...]:
        """Every variant (``--task``) of the protocol; empty when it has none to choose."""
        return ()

    def all_regions(self, cfg: EvalConfig) -> tuple[Region, ...]:
        """Every region of the variant in `cfg`, in output order."""
        raise NotImplementedError

    def regions(self, cfg: EvalConfig) -> tuple[Region, ...]:
        """Regions to score: aggregates unless omitted, single-label regions whose label is chosen."""
        labels = set(cfg.labels)
        return tuple(
            r for r in self.all_regions(cfg) if (not cfg.omit_aggregates if r.aggregate else r.labels[0] in labels)
        )

    def column(self, stem: str, region: str) -> str:
        """Per-case table column of `stem` for `region`."""
        raise NotImplementedError

    def stems(self) -> tuple[str, ...]:
        """Per-region table stems, in column order."""
        raise NotImplementedError

    def headline(self) -> tuple[str, str]:
        """(overlap stem, distance stem) for the figure."""
        raise NotImplementedError

    def columns(self, regions: Sequence[str]) -> list[str]:
        """Per-case table columns for `regions`."""
        return [self.column(stem, region) for region in regions for stem in self.stems()]

    def score(
        self,
        gt: np.ndarray,
        pred: np.ndarray,
        spacing: tuple[float, float, float],
        cfg: EvalConfig,
        regions: Sequence[Region],
        *,
        missing_prediction: bool,
    ) -> ProtocolScores:
        """Score one case (the prediction is all background when `missing_prediction`)."""
        raise NotImplementedError


class Brats2024(Protocol):
    """The official BraTS 2024 GLI scorer (`segkit.metrics.lesionwise`)."""

    name = "brats2024"
    title = "the official BraTS 2024 GLI lesion-wise scorer"
    options = ("hd95_penalty",)
    console = (
        ("LW Dice", "LesionWise_Score_Dice", 4),
        ("LW HD95 (mm)", "LesionWise_Score_HD95", 1),
        ("legacy Dice", "Legacy_Dice", 4),
        ("legacy HD95", "Legacy_HD95", 2),
        ("TP", "Num_TP", 0),
        ("FP", "Num_FP", 0),
        ("FN", "Num_FN", 0),
    )

    def keys(self) -> tuple[str, ...]:
        from segkit.metrics.lesionwise import OFFICIAL_KEYS

        return tuple(OFFICIAL_KEYS)

    def all_regions(self, cfg: EvalConfig) -> tuple[Region, ...]:
        from segkit.metrics.lesionwise import BRATS2024

        return tuple(Region(rule.name, rule.labels) for rule in BRATS2024.regions)

    def column(self, stem: str, region: str) -> str:
        return f"{region}_{stem}"

    def stems(self) -> tuple[str, ...]:
        return self.keys()

    def headline(self) -> tuple[str, str]:
        return ("LesionWise_Score_Dice", "LesionWise_Score_HD95")

    def score(
        self,
        gt: np.ndarray,
        pred: np.ndarray,
        spacing: tuple[float, float, float],
        cfg: EvalConfig,
        regions: Sequence[Region],
        *,
        missing_prediction: bool,
    ) -> ProtocolScores:
        from segkit.metrics.lesionwise import BRATS2024, auto_penalty, score_case

        if cfg.hd95_penalty == "auto":
            penalty, rule = auto_penalty(gt.shape, spacing)
        else:
            penalty, rule = float(cfg.hd95_penalty), "explicit"
        names = [r.name for r in regions]
        scores = score_case(gt, pred, spacing, penalty=penalty, protocol=BRATS2024, regions=names)
        table = {self.column(k, r): float(v) for r in names for k, v in scores.regions[r].items()}
        return ProtocolScores(
            regions=scores.regions,
            table=table,
            report={"hd95_penalty": penalty, "lesions": [row.to_dict() for row in scores.lesions]},
            info={"hd95_penalty": penalty, "penalty_rule": rule},
        )


class Brats2025(Protocol):
    """BraTS 2025 (``brats-evaluation`` 0.0.10 on panoptica 2.1.7), `segkit.metrics.panoptic`."""

    name = "brats2025"
    title = "BraTS 2025 lesion-wise metrics (brats-evaluation / panoptica)"
    options = ("task", "nsd_tolerance", "vol_threshold", "overlap_threshold")
    report_table = True
    console = (
        ("LW DSC", "lesionwise_dsc_mean", 4),
        ("LW NSD", "lesionwise_nsd_mean", 4),
        ("LW HD95 (mm)", "lesionwise_hd95_mean", 2),
        ("F1", "all_instance_f1", 4),
        ("global DSC", "global_dsc", 4),
        ("TP", "all_instance_tp", 0),
        ("FP", "all_instance_fp", 0),
        ("FN", "all_instance_fn", 0),
    )

    def keys(self) -> tuple[str, ...]:
        from segkit.metrics.panoptic import REGION_KEYS

        return tuple(REGION_KEYS)

    def variant(self, cfg: EvalConfig) -> str:
        return cfg.task

    def variants(self) -> tuple[str, ...]:
        return BRATS2025_TASKS

    def all_regions(self, cfg: EvalConfig) -> tuple[Region, ...]:
        from segkit.metrics.panoptic import VARIANTS

        return tuple(Region(g.name, g.labels) for g in VARIANTS[cfg.task])

    def column(self, stem: str, region: str) -> str:
        return f"{stem}_{region}"

    def stems(self) -> tuple[str, ...]:
        from segkit.metrics.panoptic import CHALLENGE_METRICS, SIZE_METRICS

        return tuple(stem for stem, _ in CHALLENGE_METRICS) + tuple(SIZE_METRICS)

    def headline(self) -> tuple[str, str]:
        return ("lesionwise_dsc_mean", "lesionwise_hd95_mean")

    def score(
        self,
        gt: np.ndarray,
        pred: np.ndarray,
        spacing: tuple[float, float, float],
        cfg: EvalConfig,
        regions: Sequence[Region],
        *,
        missing_prediction: bool,
    ) -> ProtocolScores:
        from segkit.metrics.panoptic import Group, challenge_row, score_case

        groups = [Group(r.name, r.labels) for r in regions]
        tolerance = None if cfg.nsd_tolerance == "auto" else float(cfg.nsd_tolerance)
        results = score_case(gt, pred, spacing, groups=groups, tolerance=tolerance)
        table = challenge_row(
            results,
            missing_prediction=missing_prediction,
            vol_threshold=cfg.vol_threshold,
            overlap_threshold=cfg.overlap_threshold,
        )
        return ProtocolScores(
            regions={name: dict(r.values) for name, r in results.items()},
            table=table,
            report={
                "task": cfg.task,
                "reference_instances": {name: [i.to_dict() for i in r.instances] for name, r in results.items()},
            },
        )


BRATS2025_TASKS = ("gli", "mets", "ped", "MenRT", "MenPre", "GoAT")
"""The bundled configs of ``brats-evaluation`` (their regions: `segkit.metrics.panoptic.VARIANTS`)."""

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (Brats2024(), Brats2025())}
"""Every lesion-wise protocol by ``--protocol`` name."""


def protocol(name: str) -> Protocol:
    """The protocol called `name`.

    Raises:
        KeyError: Unknown name (the message lists the known ones).
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        msg = f"unknown protocol {name!r}; available: {', '.join(PROTOCOLS)}"
        raise KeyError(msg) from None
