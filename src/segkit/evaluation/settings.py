"""What an `EvalConfig` asks for, derived in one place: regions, voxel keys, penalty, validity.

`segkit.config.models.EvalConfig` is the only holder of the evaluation settings and their defaults; the
run, the worker processes (it is picklable) and the reports all read it through these functions.
"""

from __future__ import annotations

from segkit.config.models import EvalConfig
from segkit.errors import ConfigError
from segkit.metrics.lesionwise import PROTOCOLS
from segkit.metrics.voxel import LabelOrRegion

AGGREGATES = ("WT", "TC")


def labels_of(cfg: EvalConfig) -> tuple[int, ...]:
    """The labels to score, in the given order, each once."""
    return tuple(dict.fromkeys(cfg.labels))


def regions_of(cfg: EvalConfig) -> tuple[str, ...]:
    """Lesion-wise regions in protocol order: the aggregates (unless omitted) and the chosen labels."""
    labels = labels_of(cfg)
    out = []
    for rule in PROTOCOLS[cfg.protocol].regions:
        if rule.name in AGGREGATES:
            if not cfg.omit_aggregates:
                out.append(rule.name)
        elif len(rule.labels) == 1 and rule.labels[0] in labels:
            out.append(rule.name)
    return tuple(out)


def voxel_keys_of(cfg: EvalConfig) -> tuple[LabelOrRegion, ...]:
    """nnU-Net keys: each label, then the aggregate regions as label tuples (unless omitted)."""
    keys: list[LabelOrRegion] = list(labels_of(cfg))
    if not cfg.omit_aggregates:
        protocol = PROTOCOLS[cfg.protocol]
        keys += [protocol.region(name).labels for name in AGGREGATES]
    return tuple(keys)


def penalty_of(cfg: EvalConfig) -> float | None:
    """The HD95 penalty in mm, or None for the automatic, grid-dependent value."""
    return None if cfg.hd95_penalty == "auto" else float(cfg.hd95_penalty)


def nnunet_cmd_of(cfg: EvalConfig) -> str | None:
    """nnU-Net evaluator command (or ``api``), None when the cross-check is skipped."""
    return None if cfg.skip_nnunet else cfg.nnunet_cmd


def validate_settings(cfg: EvalConfig) -> None:
    """Reject settings that cannot work, before any file is read.

    Raises:
        ConfigError: Unknown protocol, labels outside the protocol, nothing left to score.
    """
    if cfg.protocol not in PROTOCOLS:
        msg = f"unknown protocol {cfg.protocol!r}; available: {', '.join(PROTOCOLS)}"
        raise ConfigError(msg)
    protocol = PROTOCOLS[cfg.protocol]
    valid = sorted({r.labels[0] for r in protocol.regions if len(r.labels) == 1})
    bad = [label for label in labels_of(cfg) if label not in valid]
    if bad:
        msg = f"labels {bad} are not scored by protocol {cfg.protocol} (labels: {valid})"
        raise ConfigError(msg)
    if not regions_of(cfg):
        msg = "nothing to score: no labels and aggregates omitted"
        raise ConfigError(msg)
