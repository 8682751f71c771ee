"""The segkit library API: one function per command, usable from a notebook without the CLI.

Each function takes a resolved `SegkitConfig` (see `segkit.config.load_config`) and an optional
`ProgressSink`, does the work and returns a result object; it never prints or exits. Heavy modules are
imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segkit import __version__
from segkit.conventions import DEFAULT_DATA_ROOTS, DEFAULT_TEST_ROOTS, DEFAULT_TRAIN_ROOTS
from segkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    import dash

    from segkit.config.models import SegkitConfig
    from segkit.data.check import CheckReport
    from segkit.data.nnunet_dataset import PrepareResult
    from segkit.data.splits import SplitsResult
    from segkit.data.stats import StatsResult
    from segkit.data.synth import SynthResult
    from segkit.progress import ProgressSink
    from segkit.viz.arch_figures import ArchResult
    from segkit.viz.gif import GifOutcome
    from segkit.viz.static import StaticResult


def _roots_or_defaults(given: list[Path] | None, defaults: tuple[str, ...]) -> list[Path]:
    """The roots given explicitly (which must exist), else the default roots that exist."""
    from segkit.data.cases import existing_roots

    if given is not None:
        return list(given)
    return existing_roots(defaults)


def synth(config: SegkitConfig, *, progress: ProgressSink | None = None) -> SynthResult:
    """Write a synthetic BraTS post-treatment cohort (`segkit data synth`)."""
    from segkit.data.synth import write_cohort

    cfg = config.synth
    if cfg.output is None:
        msg = "no output folder given"
        raise ConfigError(msg, hint="segkit data synth OUT, or set synth.output in the run config")
    return write_cohort(
        cfg.output,
        cases=cfg.cases,
        shape=cfg.shape,
        spacing=cfg.spacing,
        seed=cfg.seed,
        unlabelled=cfg.unlabelled,
        start=cfg.start,
        overwrite=cfg.overwrite,
        progress=progress,
        version=__version__,
    )


def check(config: SegkitConfig, *, progress: ProgressSink | None = None) -> CheckReport:
    """Validate BraTS case folders (`segkit data check`)."""
    from segkit.data.check import check_roots

    cfg = config.check
    roots = _roots_or_defaults(cfg.roots, DEFAULT_DATA_ROOTS)
    if not roots:
        msg = f"no data roots found (looked for {', '.join(DEFAULT_DATA_ROOTS)} in {Path.cwd()})"
        raise DataError(msg, hint="pass the roots to check: segkit data check ROOT [ROOT ...]")
    return check_roots(
        roots,
        require_labels=cfg.require_labels,
        affine_tolerance=cfg.affine_tolerance,
        workers=cfg.workers,
        progress=progress,
    )


def prepare(config: SegkitConfig, *, progress: ProgressSink | None = None) -> PrepareResult:
    """Export BraTS case folders to an nnU-Net v2 raw dataset (`segkit data prepare`)."""
    from segkit.data.nnunet_dataset import prepare_dataset

    cfg = config.prepare
    return prepare_dataset(
        dataset=config.dataset,
        nnunet_raw=config.nnunet.raw,
        train_sources=_roots_or_defaults(cfg.train_sources, DEFAULT_TRAIN_ROOTS),
        test_sources=_roots_or_defaults(cfg.test_sources, DEFAULT_TEST_ROOTS),
        clean=cfg.clean,
        require_test_labels=cfg.require_test_labels,
        verify=cfg.verify,
        workers=cfg.workers,
        progress=progress,
        version=__version__,
    )


def splits(config: SegkitConfig) -> SplitsResult:
    """Write nnU-Net's cross-validation folds for a prepared dataset (`segkit data splits`).

    The case identifiers are those of ``imagesTr`` in the raw dataset, i.e. exactly the identifiers
    nnU-Net's trainer would split.
    """
    from segkit.data.nnunet_dataset import dataset_case_ids
    from segkit.data.splits import write_splits

    raw_dir = config.nnunet.dataset_dir("raw", config.dataset)
    if not raw_dir.is_dir():
        msg = f"dataset {config.dataset} is not prepared (no folder {raw_dir})"
        raise DataError(msg, hint="run `segkit data prepare` first")
    ids = dataset_case_ids(raw_dir)
    cfg = config.splits
    dest = cfg.output or config.nnunet.dataset_dir("preprocessed", config.dataset) / "splits_final.json"
    return write_splits(ids, dest, n_folds=cfg.folds, seed=cfg.seed, overwrite=cfg.overwrite)


# --- visualisation (segkit viz) ---------------------------------------------------------------------


def viz_static(config: SegkitConfig) -> StaticResult:
    """Write (and optionally show) a figure of one case (`segkit viz static`).

    The output defaults to ``outputs/figures/<case>_<layout>.png``.
    """
    from segkit.viz.static import render_static

    cfg = config.viz.static
    if cfg.case_dir is None:
        msg = "no case folder given"
        raise ConfigError(msg, hint="segkit viz static --case-dir training_data/BraTS-GLI-00001-000")
    output = cfg.output or Path("outputs/figures") / f"{Path(cfg.case_dir).name}_{cfg.layout}.png"
    return render_static(
        cfg.case_dir,
        output=output,
        layout=cfg.layout,
        axis=cfg.axis,
        fraction=cfg.fraction,
        index=cfg.index,
        modality=cfg.modality,
        indices=cfg.indices,
        overlay=cfg.overlay,
        style=cfg.style,
        alpha=cfg.alpha,
        prediction=cfg.pred,
        percentiles=cfg.percentiles,
        dpi=cfg.dpi,
        overwrite=cfg.overwrite,
        show=cfg.show,
    )


def viz_gif(config: SegkitConfig, *, progress: ProgressSink | None = None) -> list[GifOutcome]:
    """Write slice-sweep GIFs of one case or a whole root (`segkit viz gif`)."""
    from segkit.viz.gif import make_gifs

    cfg = config.viz.gif
    root = cfg.root
    if root is None:
        roots = _roots_or_defaults(None, DEFAULT_DATA_ROOTS)
        if not roots:
            msg = f"no data root found (looked for {', '.join(DEFAULT_DATA_ROOTS)} in {Path.cwd()})"
            raise DataError(msg, hint="pass --root DIR")
        root = roots[0]
    return make_gifs(
        root,
        cfg.output_dir,
        case=cfg.case,
        max_cases=cfg.max_cases,
        modality=cfg.modality,
        axis=cfg.axis,
        step=cfg.step,
        overlay=cfg.overlay,
        style=cfg.style,
        alpha=cfg.alpha,
        frame_ms=cfg.frame_ms,
        percentiles=cfg.percentiles,
        overwrite=cfg.overwrite,
        workers=cfg.workers,
        progress=progress,
    )


def data_stats(config: SegkitConfig, *, progress: ProgressSink | None = None) -> StatsResult:
    """Cohort statistics of the data roots, from the cache when the files are unchanged (`segkit data stats`)."""
    from segkit.data.stats import dataset_stats

    cfg = config.stats
    roots = _roots_or_defaults(cfg.roots, DEFAULT_DATA_ROOTS)
    if not roots:
        msg = f"no data roots found (looked for {', '.join(DEFAULT_DATA_ROOTS)} in {Path.cwd()})"
        raise DataError(msg, hint="pass the roots: segkit data stats ROOT [ROOT ...]")
    return dataset_stats(
        roots,
        cache_dir=cfg.cache_dir if cfg.cache else None,
        recompute=cfg.recompute,
        bins=cfg.bins,
        workers=cfg.workers,
        progress=progress,
    )


def _viz_roots(given: list[Path] | None) -> list[Path]:
    roots = _roots_or_defaults(given, DEFAULT_DATA_ROOTS)
    if not roots:
        msg = f"no data roots found (looked for {', '.join(DEFAULT_DATA_ROOTS)} in {Path.cwd()})"
        raise DataError(msg, hint="pass --data-root DIR (repeatable)")
    return roots


def viz_app(config: SegkitConfig) -> dash.Dash:
    """Build the interactive slice viewer over the data roots (`segkit viz app`); serve it with `app.run`."""
    from segkit.viz.app import create_app
    from segkit.viz.viewer import CaseIndex

    cfg = config.viz.app
    index = CaseIndex.build(_viz_roots(cfg.data_roots), cfg.pred_dir)
    return create_app(index, cache_cases=cfg.cache_cases, percentiles=cfg.percentiles)


def viz_stats_app(config: SegkitConfig) -> dash.Dash:
    """Build the statistics inspector over the data roots (`segkit viz stats`); serve it with `app.run`."""
    from segkit.viz.stats_app import StatsSettings, create_stats_app

    cfg = config.stats
    settings = StatsSettings(tuple(_viz_roots(cfg.roots)), cfg.cache_dir, bins=cfg.bins, workers=cfg.workers)
    return create_stats_app(settings)


def viz_arch(config: SegkitConfig) -> ArchResult:
    """Describe and draw the network of an nnU-Net plans configuration (`segkit viz arch`).

    The plans are found from ``viz.arch.plans`` (a file, a folder, a dataset id or name; default: the
    run config's dataset) under ``nnunet.results`` and ``nnunet.preprocessed``.
    """
    from segkit.viz.arch_figures import render_architecture

    cfg = config.viz.arch
    return render_architecture(
        cfg.plans or config.dataset,
        configuration=cfg.configuration,
        search_roots=[config.nnunet.results, config.nnunet.preprocessed],
        output=cfg.output,
        detailed_output=cfg.detailed_output,
        vector_output=cfg.vector_output,
        detailed_vector_output=cfg.detailed_vector_output,
        dpi=cfg.dpi,
        overwrite=cfg.overwrite,
    )
