"""Command-line flags declared on a backend's pydantic ``Options`` model, next to the option itself.

A backend's options live only in its ``Options`` model. A field becomes a flag of ``segkit train``,
``segkit infer`` and/or ``segkit data plan`` by carrying a `CliFlag` in its ``Annotated`` metadata;
the CLI builds those commands' backend flags from the installed backends' models when the command
runs, so a new backend (built in or a plugin) edits nothing under ``segkit/cli`` or ``segkit/config``::

    from typing import Annotated, ClassVar
    from pydantic import Field
    from segkit.config.flags import INFER, TRAIN, CliFlag
    from segkit.config.models import Strict

    class MyOptions(Strict):
        cli_panel: ClassVar[str] = "My backend"          # help panel (default: "<name> backend")
        depth: Annotated[int, CliFlag(commands=(TRAIN,))] = Field(4, ge=1, description="Encoder depth.")
        tta: Annotated[bool, CliFlag("--tta", off="--disable-tta", commands=(INFER,))] = Field(
            True, description="Mirror at test time."
        )

What the CLI derives from a field:

- the spelling: `CliFlag.names` (long name first, then short forms such as ``-C``), by default the
  field name with dashes (``--depth``);
- help text and default: the field's ``description`` and default (the flag itself defaults to "not
  given", so the model default, the YAML and ``--set`` apply below it);
- the value: ``bool`` is an on-switch (``--npz``) or an on/off pair with `CliFlag.off`
  (``--tta/--disable-tta``); ``int``/``float``/``str``/``Path`` take one value; a fixed-length
  ``tuple`` takes that many (``--patch-size X Y Z``); a ``list`` takes one or more values
  (``--class-weights 1 2 3``). Optional (``X | None``) and literal types follow their value type;
  pydantic validates the value afterwards, so a bad value is a ``backends.<name>.<field>`` error.

Several backends may declare the same flag (``--overwrite``): it is one flag, routed to the selected
backend's own field. A flag that only other backends declare is a one-line usage error.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

TRAIN = "train"
INFER = "infer"
PLAN = "plan"
"""Commands a flag can belong to: ``segkit train``, ``segkit infer``, ``segkit data plan``."""

COMMANDS = (TRAIN, INFER, PLAN)


@dataclass(frozen=True)
class CliFlag:
    """Marks an ``Options`` field as a command-line flag (put it in the field's ``Annotated[...]``).

    Attributes:
        names: Flag spellings, long name first (``"--configuration", "-C"``); empty: ``--<field-name>``.
        commands: Commands that offer the flag (`TRAIN`, `INFER`, `PLAN`).
        off: For a ``bool`` field, the spelling that sets it False (``"--no-mirroring"``); None makes the
            flag an on-switch.
        metavar: Value placeholder in the help (``"X Y Z"``); default: derived from the type.
        panel: Help panel; default: the model's ``cli_panel`` class attribute, else ``"<backend> backend"``.
    """

    names: tuple[str, ...] = ()
    commands: tuple[str, ...] = (TRAIN, INFER)
    off: str | None = None
    metavar: str | None = None
    panel: str | None = None

    def __init__(
        self,
        *names: str,
        commands: tuple[str, ...] | list[str] = (TRAIN, INFER),
        off: str | None = None,
        metavar: str | None = None,
        panel: str | None = None,
    ) -> None:
        unknown = set(commands) - set(COMMANDS)
        if unknown:
            msg = f"CliFlag commands must be among {COMMANDS}, got {sorted(unknown)}"
            raise ValueError(msg)
        if names and not names[0].startswith("--"):
            msg = f"CliFlag's first name must be a long flag (--name), got {names[0]!r}"
            raise ValueError(msg)
        object.__setattr__(self, "names", tuple(names))
        object.__setattr__(self, "commands", tuple(commands))
        object.__setattr__(self, "off", off)
        object.__setattr__(self, "metavar", metavar)
        object.__setattr__(self, "panel", panel)


ValueKind = Literal["bool", "scalar", "tuple", "list"]


@dataclass(frozen=True)
class FlagSpec:
    """One flag of one backend, resolved from its field (what the CLI turns into a click option)."""

    backend: str
    field: str
    names: tuple[str, ...]
    off: str | None
    kind: ValueKind
    item_type: type
    nargs: int
    help: str
    metavar: str | None
    panel: str

    @property
    def flag(self) -> str:
        """The long spelling, e.g. ``--da-processes``."""
        return self.names[0]


def flag_specs(backend: str, model: type[BaseModel], command: str) -> list[FlagSpec]:
    """The flags that `model` (backend `backend`'s ``Options``) declares for `command`, in field order.

    Raises:
        TypeError: A `CliFlag` on a field whose type cannot be a flag (e.g. a dict).
    """
    default_panel = getattr(model, "cli_panel", None) or f"{backend} backend"
    specs = []
    for field, info in model.model_fields.items():
        marker = next((m for m in info.metadata if isinstance(m, CliFlag)), None)
        if marker is None or command not in marker.commands:
            continue
        kind, item_type, nargs = _value_shape(info, f"{model.__name__}.{field}")
        specs.append(
            FlagSpec(
                backend=backend,
                field=field,
                names=marker.names or ("--" + field.replace("_", "-"),),
                off=marker.off,
                kind=kind,
                item_type=item_type,
                nargs=nargs,
                help=info.description or "",
                metavar=marker.metavar,
                panel=marker.panel or default_panel,
            )
        )
    return specs


def _strip(annotation: Any) -> Any:
    """Drop ``Annotated`` wrappers and ``None`` from a union (``list[ConfigPath] | None`` -> ``list[...]``)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _scalar(annotation: Any, where: str) -> type:
    annotation = _strip(annotation)
    if get_origin(annotation) is Literal:
        values = get_args(annotation)
        kinds = {type(v) for v in values}
        return kinds.pop() if len(kinds) == 1 else str
    if annotation in (int, float, str, bool) or (isinstance(annotation, type) and issubclass(annotation, Path)):
        return annotation if annotation is not bool else bool
    msg = f"{where}: a CliFlag needs a bool, int, float, str, Path, tuple or list field, not {annotation!r}"
    raise TypeError(msg)


def _value_shape(info: FieldInfo, where: str) -> tuple[ValueKind, type, int]:
    annotation = _strip(info.annotation)
    origin = get_origin(annotation)
    if annotation is bool:
        return "bool", bool, 1
    if origin is tuple:
        args = get_args(annotation)
        if not args or Ellipsis in args or len({_scalar(a, where) for a in args}) != 1:
            msg = f"{where}: a tuple flag needs a fixed length and one item type"
            raise TypeError(msg)
        return "tuple", _scalar(args[0], where), len(args)
    if origin is list:
        return "list", _scalar(get_args(annotation)[0], where), 1
    return "scalar", _scalar(annotation, where), 1
