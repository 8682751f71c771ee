"""Backend flags of ``segkit train``, ``segkit infer`` and ``segkit data plan``, built from the backends' models.

Each installed backend declares its flags on its ``Options`` model (`segkit.config.flags`). The
commands here are `BackendCommand`s: when one runs, it reads every installed backend's model and adds
those flags (one help panel per backend), so nothing in ``segkit/cli`` names a backend option.

- Parsing accepts the flags of every installed backend; the backend is known only after the YAML and
  ``--set`` are applied, and then a flag that the selected backend does not declare is a one-line
  usage error ("--epochs is an option of the nnunet backend, not of 'monai'").
- Help: ``segkit train --backend X --help`` shows X's panel only; without ``--backend`` every installed
  backend's panel is shown.
- A backend flag whose spelling a command already uses for a common option is not added (the common
  option wins); several backends declaring the same flag share it, each receiving it as its own field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from segkit.config.models import NnUNetPaths, SegkitConfig, TrainConfig
from segkit.config.models import field_description as _d

if TYPE_CHECKING:
    from segkit.config.flags import FlagSpec

PARAM_PREFIX = "backend_flag__"
META_KEY = "segkit.backend_flags"

BackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help=_d(TrainConfig, "backend"))]
FoldOpt = Annotated[
    list[str] | None,
    typer.Option("--fold", "-f", help=_d(TrainConfig, "fold"), metavar="FOLD...", show_default=False),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help=_d(TrainConfig, "device"))]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset-id", "-d", help=_d(SegkitConfig, "dataset"), metavar="DatasetNNN_Name")
]
NnUNetRawOpt = Annotated[Path | None, typer.Option("--nnunet-raw", help=_d(NnUNetPaths, "raw") + " Beats $nnUNet_raw.")]
NnUNetPreprocessedOpt = Annotated[
    Path | None,
    typer.Option("--nnunet-preprocessed", help=_d(NnUNetPaths, "preprocessed") + " Beats $nnUNet_preprocessed."),
]
NnUNetResultsOpt = Annotated[
    Path | None, typer.Option("--nnunet-results", help=_d(NnUNetPaths, "results") + " Beats $nnUNet_results.")
]
OptionOpt = Annotated[
    list[str] | None,
    typer.Option("--option", metavar="KEY=VALUE", help="Option of the selected backend (repeatable), any backend."),
]


@dataclass
class SharedFlag:
    """One flag on the command line, declared by one or more backends (name -> their field)."""

    spec: FlagSpec
    owners: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    panels: list[str] = field(default_factory=list)
    item_type: type = str

    @property
    def param_name(self) -> str:
        return PARAM_PREFIX + self.spec.flag.lstrip("-").replace("-", "_")

    def help_text(self) -> str:
        texts = list(dict.fromkeys(self.helps.values()))
        if len(texts) == 1:
            return texts[0]
        return " ".join(f"{name}: {text}" for name, text in self.helps.items())

    def panel(self) -> str:
        return self.panels[0] if len(self.panels) == 1 else " and ".join(self.panels)


def installed_flags(command: str, only: str | None = None) -> list[SharedFlag]:
    """The backend flags of `command` over every installed backend (or only backend `only`)."""
    from segkit.backends import registry
    from segkit.config.flags import flag_specs

    merged: dict[str, SharedFlag] = {}
    for name, entry in registry.discover().items():
        if only is not None and name != only:
            continue
        try:
            model = entry.load().Options
            specs = flag_specs(name, model, command)
        except Exception:  # an unimportable plugin is reported by `segkit backends`, not here
            continue
        for spec in specs:
            shared = merged.get(spec.flag)
            if shared is None:
                shared = merged[spec.flag] = SharedFlag(spec, item_type=spec.item_type)
            elif (shared.spec.kind, shared.spec.nargs, shared.spec.off) != (spec.kind, spec.nargs, spec.off):
                continue  # an incompatible second declaration: the first backend's shape wins
            elif shared.item_type is not spec.item_type:
                shared.item_type = str  # pydantic converts the text for each backend
            shared.owners[name] = spec.field
            shared.helps[name] = spec.help
            if spec.panel not in shared.panels:
                shared.panels.append(spec.panel)
    return list(merged.values())


def _annotation(flag: SharedFlag) -> Any:
    item: Any = flag.item_type
    if flag.spec.kind == "bool":
        return bool | None
    if flag.spec.kind == "tuple":
        return tuple[(item,) * flag.spec.nargs] | None  # type: ignore[misc]
    if flag.spec.kind == "list":
        return list[item] | None
    return item | None


def _click_param(flag: SharedFlag) -> Any:
    from typer.main import _get_param
    from typer.models import ParamMeta

    names = list(flag.spec.names)
    if flag.spec.kind == "bool" and flag.spec.off:
        names[0] = f"{names[0]}/{flag.spec.off}"
    metavar = flag.spec.metavar
    if metavar is None and flag.spec.kind == "tuple":
        metavar = " ".join(["X", "Y", "Z"] if flag.spec.nargs == 3 else ["V"] * flag.spec.nargs)
    option = typer.Option(
        None,
        *names,
        help=flag.help_text(),
        metavar=metavar,
        show_default=False,
        rich_help_panel=flag.panel(),
    )
    return _get_param(ParamMeta(name=flag.param_name, default=option, annotation=_annotation(flag)))


def _given_backend(args: Sequence[str]) -> str | None:
    for i, token in enumerate(args):
        if token in ("--backend", "-b") and i + 1 < len(args):
            return args[i + 1]
        if token.startswith("--backend="):
            return token.partition("=")[2]
    return None


class BackendCommand(TyperCommand):
    """A Typer command that adds the installed backends' flags for its `flag_command` when it runs."""

    flag_command = "train"

    @classmethod
    def of(cls, command: str) -> type[BackendCommand]:
        """The command class for `command` (``train``, ``infer`` or ``plan``)."""
        return type(f"{command.title()}Command", (cls,), {"flag_command": command})

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from segkit.cli._argv import expand_multi_value, value_test

        wants_help = any(a in ("--help", "-h") for a in args)
        flags = self._add_flags(ctx, installed_flags(self.flag_command, _given_backend(args) if wants_help else None))
        lists = {name: value_test(f.item_type) for f in flags if f.spec.kind == "list" for name in f.spec.names}
        return super().parse_args(ctx, expand_multi_value(args, lists))

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        if self._key(".params") not in ctx.meta:  # help or docs without parsing: every backend's flags
            self._add_flags(ctx, installed_flags(self.flag_command))
        extra = ctx.meta[self._key(".params")]
        return [*params[:-1], *extra, params[-1]] if params else list(extra)  # --help stays last

    def _key(self, suffix: str = "") -> str:
        # ctx.meta is shared by every context of one invocation (and by the docs generator's walk)
        return f"{META_KEY}.{self.flag_command}{suffix}"

    def _add_flags(self, ctx: Any, flags: list[SharedFlag]) -> list[SharedFlag]:
        taken = {opt for p in self.params for opt in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
        flags = [f for f in flags if not (set(f.spec.names) | {f.spec.off}) & taken]
        ctx.meta[self._key()] = {f.param_name: f for f in flags}
        ctx.meta[self._key(".params")] = [_click_param(f) for f in flags]
        return flags

    def invoke(self, ctx: Any) -> Any:
        flags: dict[str, SharedFlag] = ctx.meta.get(self._key(), {})
        given = {}
        for name, flag in flags.items():
            value = ctx.params.pop(name, None)
            if isinstance(value, tuple | list):
                value = list(value) if flag.spec.kind == "list" else tuple(value)
                if not value:
                    value = None
            if value is not None:
                given[flag.spec.flag] = (flag, value)
        ctx.meta[META_KEY + ".given"] = given
        return super().invoke(ctx)


def given_flags(ctx: typer.Context) -> dict[str, tuple[SharedFlag, Any]]:
    """The backend flags given on this command line: flag spelling -> (flag, value)."""
    return dict(ctx.meta.get(META_KEY + ".given", {}))


def route(backend: str, given: dict[str, tuple[SharedFlag, Any]]) -> dict[str, Any]:
    """Dotted config keys (``backends.<backend>.<field>``) for the backend flags given.

    Raises:
        ConfigError: A flag that `backend` does not declare.
    """
    from segkit.errors import ConfigError

    out: dict[str, Any] = {}
    for spelling, (flag, value) in given.items():
        owner = flag.owners.get(backend)
        if owner is None:
            owners = list(flag.owners)
            names = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} and {owners[-1]}"
            msg = f"{spelling} is an option of the {names} backend{'s' if len(owners) > 1 else ''}, not of {backend!r}"
            raise ConfigError(msg, hint=f"use --option KEY=VALUE for options of {backend!r}")
        out[f"backends.{backend}.{owner}"] = value
    return out


def option_items(backend: str, items: Iterable[str] | None) -> list[str]:
    """``--option KEY=VALUE`` -> ``--set backends.<backend>.KEY=VALUE`` items."""
    from segkit.errors import ConfigError

    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            msg = f"--option {item!r}: expected KEY=VALUE"
            raise ConfigError(msg)
        out.append(f"backends.{backend}.{key.strip()}={value}")
    return out


def parse_folds(values: Sequence[str] | None) -> Any:
    """``--fold 0 1`` / ``--fold all`` -> 0, "all" or a list; None when not given.

    Raises:
        ConfigError: A value that is neither an integer nor ``all``.
    """
    from segkit.errors import ConfigError

    if not values:
        return None
    folds: list[Any] = []
    for value in values:
        if value == "all":
            folds.append("all")
            continue
        try:
            folds.append(int(value))
        except ValueError:
            msg = f"--fold {value!r}: expected a fold index (0-4) or 'all'"
            raise ConfigError(msg) from None
    return folds[0] if len(folds) == 1 else folds


def resolve_with_backend(
    ctx: typer.Context,
    config: Path | None,
    sets: list[str] | None,
    options: list[str] | None,
    section: str,
    common: dict[str, Any],
) -> SegkitConfig:
    """Resolve the run config, routing the backend flags given to the backend the command will use.

    The backend is known only after the YAML and ``--set`` are applied, so resolution runs twice.
    """
    from segkit.config.load import load_config

    sets = list(sets or [])
    first = load_config(config, sets=sets, flags=common)
    name = getattr(first, section).backend
    dotted = {**common, **route(name, given_flags(ctx))}
    return load_config(config, sets=[*sets, *option_items(name, options)], flags=dotted)
