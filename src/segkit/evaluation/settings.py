"""What an `EvalConfig` asks for, derived in one place: protocols, regions, voxel keys, validity.

`segkit.config.models.EvalConfig` is the only holder of the evaluation settings and their defaults; the
run, the worker processes (it is picklable) and the reports all read it through these functions. The
protocols themselves (`segkit.metrics.protocols`) say which regions and options they have.
"""

from __future__ import annotations

from segkit.config.models import EvalConfig
from segkit.conventions import REGIONS
from segkit.errors import ConfigError
from segkit.metrics.protocols import PROTOCOLS, Protocol, Region
from segkit.metrics.voxel import LabelOrRegion

AGGREGATES = ("WT", "TC")
"""The aggregate regions of the nnU-Net voxel metrics (segkit's label convention)."""

_FLAGS = {
    "hd95_penalty": "--hd95-penalty",
    "task": "--task",
    "nsd_tolerance": "--nsd-tolerance",
    "vol_threshold": "--vol-threshold",
    "overlap_threshold": "--overlap-threshold",
}


def labels_of(cfg: EvalConfig) -> tuple[int, ...]:
    """The labels to score, in the given order, each once."""
    return tuple(dict.fromkeys(cfg.labels))


def protocols_of(cfg: EvalConfig) -> tuple[Protocol, ...]:
    """The chosen protocols, in the given order, each once (call `validate_settings` first)."""
    return tuple(PROTOCOLS[name] for name in dict.fromkeys(cfg.protocol))


def protocol_regions(cfg: EvalConfig, protocol: Protocol) -> tuple[Region, ...]:
    """The regions `protocol` scores under `cfg`."""
    return protocol.regions(cfg)


def regions_of(cfg: EvalConfig) -> tuple[str, ...]:
    """Lesion-wise regions of the first protocol, in protocol order."""
    return tuple(r.name for r in protocol_regions(cfg, protocols_of(cfg)[0]))


def voxel_keys_of(cfg: EvalConfig) -> tuple[LabelOrRegion, ...]:
    """nnU-Net keys: each label, then the aggregate regions as label tuples (unless omitted)."""
    keys: list[LabelOrRegion] = list(labels_of(cfg))
    if not cfg.omit_aggregates:
        keys += [REGIONS[name] for name in AGGREGATES]
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
        ConfigError: Unknown protocol or variant, an option of a protocol that is not chosen, labels no
            chosen protocol scores, nothing left to score.
    """
    unknown = [name for name in cfg.protocol if name not in PROTOCOLS]
    if unknown:
        msg = f"unknown protocol {unknown[0]!r}; available: {', '.join(PROTOCOLS)}"
        raise ConfigError(msg)
    chosen = protocols_of(cfg)
    names = {p.name for p in chosen}
    for other in PROTOCOLS.values():
        if other.name in names:
            continue
        given = [option for option in other.options if option in cfg.model_fields_set]
        if given:
            flag = _FLAGS.get(given[0], given[0])
            msg = f"{flag} belongs to protocol {other.name}, which is not chosen (--protocol {' '.join(names)})"
            raise ConfigError(msg, hint=f"add --protocol {other.name} or drop {flag}")
    for p in chosen:
        variants = p.variants()
        if variants and p.variant(cfg) not in variants:
            msg = f"unknown {p.name} task {p.variant(cfg)!r}; available: {', '.join(variants)}"
            raise ConfigError(msg)
    if (cfg.vol_threshold is None) != (cfg.overlap_threshold is None):
        msg = "--vol-threshold and --overlap-threshold go together (the METs parser's small/large-lesion columns)"
        raise ConfigError(msg)
    if "labels" in cfg.model_fields_set:
        scored = {r.labels[0] for p in chosen for r in p.all_regions(cfg) if not r.aggregate}
        bad = [label for label in labels_of(cfg) if label not in scored]
        if bad:
            msg = f"labels {bad} are not scored by protocol {' '.join(names)} (labels: {sorted(scored)})"
            raise ConfigError(msg)
    for p in chosen:
        if not protocol_regions(cfg, p):
            msg = f"nothing to score for {p.name}: no chosen label has a region and aggregates are omitted"
            raise ConfigError(msg)
