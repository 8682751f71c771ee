"""Build a validated `SegkitConfig` from defaults, a YAML file, ``--set`` overrides and explicit flags.

Precedence, lowest first: model defaults < the ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results``
environment variables < YAML < ``--set key=value`` < explicit command-line flags (`source_of` says which
layer supplied a value). A dataset given by number (``501``, ``Dataset501``) becomes its full name.
Relative paths in the YAML resolve against the YAML's folder; everything else against the working
directory. Every validation problem becomes a `ConfigError` naming the dotted key and the reason.

Backend sections (``backends.<name>``) are plain mappings here: loading a config imports no backend.
`backend_options` validates one backend's section with that backend's ``Options`` model when, and
only when, the backend is selected; the YAML's part of it is still anchored to the YAML's folder.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from segkit.config.models import SegkitConfig
from segkit.errors import ConfigError, did_you_mean


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one ``key.path=value`` override; the value is read as a YAML scalar or list.

    Raises:
        ConfigError: Without ``=`` or with an empty key.
    """
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        msg = f"--set {item!r}: expected KEY=VALUE, e.g. --set prepare.clean=true"
        raise ConfigError(msg)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"a.b": 1}`` into ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested dicts; `top` wins, lists are replaced, not concatenated."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
"""Byte-order marks, longest first (a UTF-32 LE mark starts with the UTF-16 LE one)."""


def decode_text(raw: bytes, path: Path) -> str:
    """Text of a config file: UTF-8, or UTF-8/16/32 with a byte-order mark (Notepad writes UTF-16 with one).

    Raises:
        ConfigError: Any other encoding, naming the file and the first undecodable byte.
    """
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError as err:
                msg = f"{path}: not valid {encoding.upper()} text after its byte-order mark (byte {err.start})"
                raise ConfigError(msg, hint="save the run config as UTF-8") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        msg = f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
        raise ConfigError(msg, hint="save the run config as UTF-8") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``.

    Raises:
        ConfigError: If the file is missing, unreadable, not YAML, or not a mapping.
    """
    import yaml

    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        msg = f"{path}: cannot read config ({err.strerror or err})"
        raise ConfigError(msg) from err
    text = decode_text(raw, path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        msg = f"{path}: not valid YAML{where} ({problem})"
        raise ConfigError(msg) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"{path}: a run config must be a mapping of sections, found {type(data).__name__}"
        raise ConfigError(msg)
    return data


def _fields_at(model: type[BaseModel], loc: Iterable[Any]) -> list[str]:
    """Field names of the model found by walking `loc` (for "did you mean" on unknown keys)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = info.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def render_validation_error(err: ValidationError, model: type[BaseModel] = SegkitConfig, prefix: str = "") -> str:
    """One ``key.path: reason`` per problem, joined by ``; ``; `prefix` roots the keys (``backends.x.``)."""
    parts = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        # a model-level rule has no field: name the section it belongs to ("backends.umamba2")
        key = prefix + ".".join(loc) if loc else (prefix.rstrip(".") or "(root)")
        if item["type"] == "extra_forbidden":
            reason = "unknown key" + did_you_mean(loc[-1], _fields_at(model, loc[:-1]))
        else:
            reason = item["msg"]
            if reason.startswith("Value error, "):
                reason = reason[len("Value error, ") :]
        parts.append(f"{key}: {reason}")
    return "; ".join(parts)


def load_config(
    path: Path | None = None,
    *,
    sets: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> SegkitConfig:
    """Resolve the run config for one command.

    Args:
        path: A YAML run config, or None.
        sets: ``key.path=value`` overrides (``--set``), applied in order.
        flags: Explicit command-line flags as ``{"section.key": value}``; None values mean "not given".

    Raises:
        ConfigError: If the YAML or any override is invalid; the message names the key and the reason.
    """
    yaml_layer: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
        short_dataset = raw.pop("dataset", None) if _is_dataset_number(raw.get("dataset")) else None
        try:
            validated = SegkitConfig.model_validate(raw, context={"base_dir": Path(path).resolve().parent})
        except ValidationError as err:
            msg = f"{path}: {render_validation_error(err)}"
            raise ConfigError(msg) from None
        yaml_layer = validated.model_dump(exclude_unset=True)
        if short_dataset is not None:
            yaml_layer["dataset"] = short_dataset
    env_layer = environment_layer()
    set_layer = nest(dict(parse_set(item) for item in sets))
    flag_layer = nest({k: v for k, v in (flags or {}).items() if v is not None})
    merged = merge(merge(merge(env_layer, yaml_layer), set_layer), flag_layer)
    if isinstance(merged.get("dataset"), str | int):
        merged["dataset"] = resolve_dataset_name(merged["dataset"], merged.get("nnunet") or {})
    try:
        config = SegkitConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(render_validation_error(err)) from None
    yaml_name = str(path) if path is not None else "YAML"
    layers = (("environment", env_layer), (yaml_name, yaml_layer), ("--set", set_layer), ("flag", flag_layer))
    config._sources = {key: name for name, layer in layers for key in _leaf_keys(layer)}
    if path is not None:
        config._backend_yaml = _yaml_backend_parts(Path(path), yaml_layer, set_layer, flag_layer)
    return config


NNUNET_ENVIRONMENT = {"nnUNet_raw": "raw", "nnUNet_preprocessed": "preprocessed", "nnUNet_results": "results"}
"""nnU-Net's environment variables -> ``nnunet.<key>``: a config layer between the defaults and the YAML."""


def environment_layer() -> dict[str, Any]:
    """``{"nnunet": {...}}`` from the exported ``nnUNet_*`` variables (empty values are ignored)."""
    import os

    found = {key: Path(os.environ[var]) for var, key in NNUNET_ENVIRONMENT.items() if os.environ.get(var, "").strip()}
    return {"nnunet": found} if found else {}


def _leaf_keys(layer: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in layer.items():
        if isinstance(value, Mapping) and value and key != "backends":
            keys.extend(_leaf_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def source_of(config: SegkitConfig, key: str) -> str:
    """Where the value of dotted `key` came from: default, environment, the YAML file, --set or flag."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        source = config._sources.get(".".join(parts[:i]))
        if source is not None:
            return source
    return "default"


def _is_dataset_number(value: Any) -> bool:
    import re

    return isinstance(value, int | str) and re.fullmatch(r"(?:Dataset)?\d{1,3}", str(value).strip()) is not None


def resolve_dataset_name(value: str | int, nnunet: Mapping[str, Any]) -> str:
    """``501``, ``Dataset501`` or ``Dataset501_Name`` -> the full name, as nnU-Net's ``maybe_convert_to_dataset_name``.

    A full name is returned as it is (``data prepare`` creates new ones). A number is looked up as
    ``DatasetNNN_*`` in the nnU-Net raw, preprocessed and results folders.

    Raises:
        ConfigError: No such dataset, or several names with that number.
    """
    import re

    from segkit.config.models import DATASET_NAME_PATTERN, NnUNetPaths

    text = str(value).strip()
    match = re.fullmatch(r"(?:Dataset)?(\d{1,3})", text)
    if match is None:
        return text  # a full name (or an invalid one, which the model reports)
    number = int(match.group(1))
    try:
        paths = NnUNetPaths.model_validate(dict(nnunet))
    except ValidationError as err:
        raise ConfigError(render_validation_error(err, NnUNetPaths, prefix="nnunet.")) from None
    roots = (paths.raw, paths.preprocessed, paths.results)
    names = sorted(
        {
            p.name
            for root in roots
            if root.is_dir()
            for p in root.glob(f"Dataset{number:03d}_*")
            if p.is_dir() and re.match(DATASET_NAME_PATTERN, p.name)
        }
    )
    if len(names) == 1:
        return names[0]
    where = ", ".join(str(root) for root in roots)
    if not names:
        msg = f"dataset {text}: no Dataset{number:03d}_* folder in {where}"
        raise ConfigError(msg, hint="give the full name (DatasetNNN_Name), or point --nnunet-raw etc. at your folders")
    msg = f"dataset {text} is ambiguous: {', '.join(names)} (in {where})"
    raise ConfigError(msg, hint="give the full name")


def _yaml_backend_parts(
    path: Path, yaml_layer: Mapping[str, Any], *overrides: Mapping[str, Any]
) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Backend name -> (YAML file, the keys of its section that the YAML decided, not ``--set`` or a flag)."""
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name, section in (yaml_layer.get("backends") or {}).items():
        if not isinstance(section, Mapping):
            continue
        overridden = {key for layer in overrides for key in ((layer.get("backends") or {}).get(name) or {})}
        out[name] = (path, {k: v for k, v in section.items() if k not in overridden})
    return out


def backend_options(config: SegkitConfig, name: str, model: type[BaseModel]) -> BaseModel:
    """Validate ``backends.<name>`` of `config` with the backend's ``Options`` `model`.

    Values that came from the YAML are validated with the YAML's folder as the base of relative
    paths (and errors name the file); ``--set`` and flag values resolve against the working directory.

    Raises:
        ConfigError: One ``backends.<name>.<key>: reason`` per problem.
    """
    prefix = f"backends.{name}."
    section = dict(config.backends.get(name) or {})
    path, from_yaml = config._backend_yaml.get(name, (None, {}))
    if path is not None and from_yaml:
        # Validate the whole section once with the YAML's folder as the base, keep those values only
        # for the keys the YAML set (a model validator may need keys from several layers).
        try:
            anchored = model.model_validate(section, context={"base_dir": path.resolve().parent})
        except ValidationError as err:
            in_yaml = all(str(e["loc"][0]) in from_yaml for e in err.errors() if e["loc"])
            where = f"{path}: " if in_yaml else ""
            raise ConfigError(where + render_validation_error(err, model, prefix=prefix)) from None
        section.update({key: getattr(anchored, key) for key in from_yaml if key in model.model_fields})
    try:
        return model.model_validate(section)
    except ValidationError as err:
        raise ConfigError(render_validation_error(err, model, prefix=prefix)) from None


def dump_config(config: BaseModel, *, backends: Mapping[str, BaseModel] | None = None) -> str:
    """The fully resolved config as YAML (paths as strings), for ``config show`` and run folders.

    `backends` maps a backend name to its validated options (`backend_options`), which then replace
    that backend's raw section: every option with its value, relative YAML paths anchored.
    """
    import yaml

    data = config.model_dump(mode="json")
    for name, options in (backends or {}).items():
        data.setdefault("backends", {})[name] = options.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
