"""Find, download and read a MONAI bundle without running any of its code.

A bundle is a folder ``<bundle_dir>/<name>/`` with ``configs/{metadata,inference}.json`` and
``models/model.pt``. Its configs are MONAI's config language, in which ``$...`` strings are Python
expressions that MONAI ``eval``s, ``@...`` are references and ``_target_`` names a class to import
(GHSA-873f-pvrv-4x83). segkit therefore reads the configs with a plain JSON/YAML parser and accepts only
literal ``network_def`` arguments of a SegResNet; anything that would need evaluation is refused unless
the user passes ``--trust-bundle``, in which case MONAI's `ConfigParser` resolves the network arguments.
The weights are read with ``torch.load(weights_only=True)`` (see `network.load_bundle_weights`).

Importing this module imports neither torch nor monai.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.conventions import MONAI_BUNDLE_CHANNEL_ORDER
from segkit.data.inputs import channel_modalities
from segkit.errors import BackendError, ConfigError, DataError, SegkitError
from segkit.progress import NullProgress, ProgressSink

if TYPE_CHECKING:
    from segkit.backends.monai_bundle.options import MonaiOptions

WEIGHTS = Path("models") / "model.pt"
METADATA = Path("configs") / "metadata.json"
CONFIG_CANDIDATES = tuple(
    Path("configs") / f"{stem}{ext}" for stem in ("inference", "train") for ext in (".json", ".yaml", ".yml")
)
"""Configs searched for ``network_def``, in order (the bundle's inference and training configs)."""

BUNDLE_NETWORK_ARGS: Mapping[str, Any] = {
    "blocks_down": [1, 2, 2, 4],
    "blocks_up": [1, 1, 1],
    "init_filters": 16,
    "in_channels": 4,
    "out_channels": 3,
    "dropout_prob": 0.2,
}
"""``network_def`` of ``brats_mri_segmentation`` 0.5.x (identical in its train and inference configs)."""

SEGRESNET_TARGETS = frozenset({"SegResNet", "monai.networks.nets.SegResNet", "monai.networks.nets.segresnet.SegResNet"})
_EXPRESSION_PREFIXES = ("$", "@", "%")
_HARMLESS_KEYS = frozenset({"_target_", "_desc_"})


@dataclass(frozen=True)
class Bundle:
    """What segkit read from a bundle (or the defaults used without one).

    Attributes:
        name: Bundle name, None when training without a bundle.
        folder: ``<bundle_dir>/<name>``, None without a bundle.
        network_args: The bundle's SegResNet arguments (its own ``out_channels``; segkit overrides it).
        channel_order: BraTS modality of each input channel, e.g. ``("t1c", "t1n", "t2w", "t2f")``.
        weights: ``models/model.pt``, None without a bundle.
        version: The bundle's version from ``metadata.json``, if any.
        notes: Facts worth a log line (defaults assumed, configs trusted, an unverified download, the
            weights' SHA-256).
        weights_sha256: SHA-256 of ``models/model.pt`` as loaded (set by `ensure_bundle`), recorded in
            every checkpoint so that a fine-tuned model names the exact weights it started from.
    """

    name: str | None
    folder: Path | None
    network_args: dict[str, Any]
    channel_order: tuple[str, ...]
    weights: Path | None = None
    version: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    weights_sha256: str | None = None


def literal_problem(value: Any, where: str) -> str | None:
    """Why `value` is not a plain literal MONAI would leave alone, or None when it is.

    A literal is a number, bool, null, a string that does not start with ``$``, ``@`` or ``%``, or a
    list/mapping of literals whose keys are not MONAI's special ``_..._`` keys (``_target_`` is only
    allowed where the caller checks it).
    """
    if value is None or isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, str):
        if value.startswith(_EXPRESSION_PREFIXES):
            return f"{where} is the expression {value!r}"
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = literal_problem(item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if str(key).startswith("_"):
                return f"{where}#{key} is a MONAI config directive"
            problem = literal_problem(item, f"{where}#{key}")
            if problem:
                return problem
        return None
    return f"{where} is a {type(value).__name__}, not a JSON literal"


def check_literal(value: Any, where: str) -> None:
    """Raise `ValueError` (for pydantic validators) when `value` is not a literal."""
    problem = literal_problem(value, where)
    if problem:
        raise ValueError(problem)


def segresnet_args(network_def: Any, where: str, *, trusted: bool = False) -> dict[str, Any]:
    """The SegResNet arguments of a ``network_def`` mapping, refusing anything but literals.

    Args:
        network_def: The ``network_def`` entry of a bundle config (already parsed JSON/YAML, or resolved by
            MONAI when the bundle is trusted).
        where: ``<config file>#network_def``, for messages.
        trusted: The values come from MONAI's resolver; the hint then does not suggest ``--trust-bundle``.

    Raises:
        BackendError: An expression or directive, a target other than SegResNet, or an unknown argument.
    """
    from segkit.backends.monai_bundle.options import NETWORK_ARG_NAMES

    trust_hint = None if trusted else "review the bundle's configs; pass --trust-bundle to let MONAI evaluate them"
    if not isinstance(network_def, Mapping):
        problem = literal_problem(network_def, where) or f"{where} is a {type(network_def).__name__}, not a mapping"
        msg = f"{problem}; segkit does not evaluate bundle code unless trusted"
        raise BackendError(msg, hint=trust_hint)
    target = network_def.get("_target_")
    if target not in SEGRESNET_TARGETS:
        msg = f"{where}#_target_ is {target!r}; segkit fine-tunes SegResNet bundles only"
        raise BackendError(msg)
    args: dict[str, Any] = {}
    for key, value in network_def.items():
        if key in _HARMLESS_KEYS:
            continue
        if str(key).startswith("_"):
            msg = f"{where}#{key} is a MONAI config directive that runs bundle code; refused without --trust-bundle"
            raise BackendError(msg, hint=trust_hint)
        value_problem = literal_problem(value, f"{where}#{key}")
        if value_problem:
            msg = f"{value_problem}; segkit does not evaluate bundle code unless --trust-bundle is given"
            raise BackendError(msg, hint=trust_hint)
        if key not in NETWORK_ARG_NAMES:
            msg = f"{where}#{key} is not an argument of SegResNet"
            raise BackendError(msg)
        args[str(key)] = value
    return args


def bundle_folder(opts: MonaiOptions) -> Path | None:
    """``<bundle_dir>/<bundle_name>``, or None when no bundle is used."""
    return None if opts.bundle_name is None else Path(opts.bundle_dir) / opts.bundle_name


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def offline_reason(opts: MonaiOptions) -> str | None:
    """Why a missing bundle cannot be downloaded here, or None when a download may be tried."""
    if not opts.download:
        return "downloading is disabled (download: false)"
    if _truthy("SEGKIT_OFFLINE"):
        return "SEGKIT_OFFLINE is set"
    if (
        opts.bundle_url is None
        and opts.bundle_source in ("monaihosting", "huggingface_hub")
        and _truthy("HF_HUB_OFFLINE")
    ):
        return "HF_HUB_OFFLINE is set"
    return None


def _copy_hint(opts: MonaiOptions) -> str:
    folder = bundle_folder(opts)
    return (
        f"copy {folder}/ from a machine where `python -m monai.bundle download --name {opts.bundle_name} "
        f"--bundle_dir {opts.bundle_dir}` worked, or use --bundle-name none to train a fresh SegResNet"
    )


def check_bundle(opts: MonaiOptions) -> None:
    """Cheap checks before any work: the bundle is present (or can be downloaded) and its configs are safe.

    Raises:
        ConfigError: ``bundle_sha256`` without ``bundle_url`` (it would verify nothing).
        BackendError: Weights missing while offline; an unsafe or unsupported ``network_def``; a bad
            ``channel_def``.
    """
    folder = bundle_folder(opts)
    if folder is None:
        return
    if opts.bundle_sha256 is not None and opts.bundle_url is None:
        msg = "bundle_sha256 is the SHA-256 of a bundle_url archive, but no bundle_url is set"
        raise ConfigError(msg, hint="hub downloads (bundle_source) are not checked by segkit; pin a bundle_url")
    if not (folder / WEIGHTS).is_file():
        reason = offline_reason(opts)
        if reason is not None:
            msg = f"bundle {opts.bundle_name!r} has no weights: {folder / WEIGHTS} is missing and {reason}"
            raise BackendError(msg, hint=_copy_hint(opts))
        return
    read_bundle(opts)


def ensure_bundle(opts: MonaiOptions, *, progress: ProgressSink | None = None) -> Bundle:
    """The bundle, downloaded first when its weights are missing and the machine may go online.

    The returned bundle carries the SHA-256 of its ``models/model.pt`` and, after a download that no
    ``bundle_sha256`` verified, an "unverified download" note.

    Raises:
        BackendError: The bundle cannot be found or downloaded, or its configs are refused.
    """
    folder = bundle_folder(opts)
    if folder is None:
        return Bundle(None, None, dict(BUNDLE_NETWORK_ARGS), tuple(MONAI_BUNDLE_CHANNEL_ORDER))
    download_notes: list[str] = []
    if not (folder / WEIGHTS).is_file():
        check_bundle(opts)  # raises when offline
        _, download_notes = download_bundle(opts, progress=progress or NullProgress())
    bundle = read_bundle(opts)
    assert bundle.weights is not None
    digest = sha256_of(bundle.weights)
    notes = (*download_notes, *bundle.notes, f"{bundle.weights}: SHA-256 {digest}")
    return dataclasses.replace(bundle, notes=notes, weights_sha256=digest)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_bundle(opts: MonaiOptions) -> Bundle:
    """Read a local bundle's network arguments, channel order and version (no code is run untrusted).

    Raises:
        BackendError: Missing weights, refused ``network_def``, or an unusable ``channel_def``.
    """
    folder = bundle_folder(opts)
    assert folder is not None
    assert opts.bundle_name is not None
    weights = folder / WEIGHTS
    if not weights.is_file():
        msg = f"bundle {opts.bundle_name!r} has no weights: {weights} is missing"
        raise BackendError(msg, hint=_copy_hint(opts))
    notes: list[str] = []
    metadata = _read_metadata(folder)
    args, config = _network_args(folder, trusted=opts.trust_bundle, metadata_present=metadata is not None)
    if config is None:
        notes.append(
            f"{folder}: no configs/inference.json or train.json with a network_def; "
            "using the brats_mri_segmentation SegResNet arguments"
        )
    elif opts.trust_bundle:
        notes.append(f"{config}: network_def resolved by MONAI (--trust-bundle)")
    order = _channel_order(folder, metadata)
    if order is None:
        order = tuple(MONAI_BUNDLE_CHANNEL_ORDER)
        notes.append(f"{folder}: no channel_def in configs/metadata.json; assuming {' '.join(order)}")
    if int(args.get("in_channels", 4)) != len(order):
        msg = f"{folder}: network_def has in_channels {args.get('in_channels')} but channel_def names {len(order)}"
        raise BackendError(msg)
    version = metadata.get("version") if isinstance(metadata, dict) else None
    return Bundle(opts.bundle_name, folder, args, order, weights, str(version) if version else None, tuple(notes))


def local_channel_order(opts: MonaiOptions) -> tuple[Path, tuple[str, ...]] | None:
    """``(metadata.json, channel order)`` of the local bundle, or None without a bundle, metadata or channel_def.

    Reads only ``configs/metadata.json`` (plain JSON); never downloads and never needs the weights.

    Raises:
        BackendError: A ``channel_def`` that is not the four BraTS modalities.
    """
    folder = bundle_folder(opts)
    if folder is None:
        return None
    order = _channel_order(folder, _read_metadata(folder))
    return None if order is None else (folder / METADATA, order)


def _read_config_file(path: Path) -> Any:
    """Parse a bundle config as data only (json / yaml.safe_load), never as MONAI config."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        msg = f"{path}: cannot read bundle config ({err})"
        raise BackendError(msg) from err
    except Exception as err:  # yaml.YAMLError does not derive from ValueError
        msg = f"{path}: not valid YAML ({err})"
        raise BackendError(msg) from err


def _read_metadata(folder: Path) -> dict[str, Any] | None:
    path = folder / METADATA
    if not path.is_file():
        return None
    data = _read_config_file(path)
    if not isinstance(data, dict):
        msg = f"{path}: expected a JSON object"
        raise BackendError(msg)
    return data


def _network_args(folder: Path, *, trusted: bool, metadata_present: bool) -> tuple[dict[str, Any], Path | None]:
    """SegResNet arguments from the first config that has ``network_def``; defaults when none has."""
    for rel in CONFIG_CANDIDATES:
        path = folder / rel
        if not path.is_file():
            continue
        data = _read_config_file(path)
        if not isinstance(data, dict) or "network_def" not in data:
            continue
        where = f"{path}#network_def"
        if trusted:
            return _trusted_network_args(folder, path, where, metadata_present), path
        return segresnet_args(data["network_def"], where), path
    return dict(BUNDLE_NETWORK_ARGS), None


def _trusted_network_args(folder: Path, config: Path, where: str, metadata_present: bool) -> dict[str, Any]:
    """Let MONAI's ConfigParser resolve ``network_def`` (runs the bundle's expressions: trusted only)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    try:
        if metadata_present:
            parser.read_meta(str(folder / METADATA))
        parser.read_config(str(config))
        parser["bundle_root"] = str(folder)
        resolved = parser.get_parsed_content("network_def", instantiate=False)
    except SegkitError:
        raise
    except Exception as err:
        msg = f"{where}: MONAI could not resolve the network ({type(err).__name__}: {err})"
        raise BackendError(msg) from err
    if hasattr(resolved, "get_config"):
        resolved = resolved.get_config()
    return segresnet_args(resolved, where, trusted=True)


def _channel_order(folder: Path, metadata: dict[str, Any] | None) -> tuple[str, ...] | None:
    """BraTS modality of each input channel from ``network_data_format.inputs.image.channel_def``."""
    if metadata is None:
        return None
    try:
        channel_def = metadata["network_data_format"]["inputs"]["image"]["channel_def"]
    except (KeyError, TypeError):
        return None
    where = f"{folder / METADATA}#network_data_format#inputs#image#channel_def"
    if not isinstance(channel_def, dict) or not channel_def:
        msg = f"{where}: expected a mapping of channel index to name"
        raise BackendError(msg)
    try:
        sorted(channel_def, key=int)
    except ValueError:
        msg = f"{where}: channel indices must be integers, got {sorted(channel_def)}"
        raise BackendError(msg) from None
    try:
        # the channel names nnU-Net datasets use (T1c, T1, T2, FLAIR, ...): one alias table for segkit
        return tuple(channel_modalities({str(k): str(v) for k, v in channel_def.items()}))
    except DataError as err:
        msg = f"{where}: {err}"
        raise BackendError(msg) from None


# --------------------------------------------------------------------------- download


def download_bundle(opts: MonaiOptions, *, progress: ProgressSink) -> tuple[Path, list[str]]:
    """Download the bundle into ``<bundle_dir>/<name>`` through MONAI's bundle API.

    The download lands in a hidden staging folder inside `bundle_dir` and is moved into place only when
    it holds ``models/model.pt``. With ``bundle_url``, segkit fetches the archive itself (so the byte
    progress goes to `progress`) into the staging folder under the name MONAI expects; MONAI's
    `monai.bundle.download` then finds it there, skips its own download and unpacks it.

    Only an archive checked against ``bundle_sha256`` counts as verified; then MONAI's "No hash value
    provided" warning is silenced, since segkit did check the hash. Every other download is reported
    as unverified: MONAI's warning is left alone and the returned notes say so in one line (with the
    archive's SHA-256 for a ``bundle_url``, to pin it with ``bundle_sha256`` next time).

    Returns:
        The bundle folder and the notes about the download (one "unverified download" line, or none).

    Raises:
        BackendError: One line naming the source and the reason, with a hint to copy the bundle.
    """
    import monai.bundle

    name = opts.bundle_name
    assert name is not None
    parent = Path(opts.bundle_dir)
    dest = parent / name
    where = opts.bundle_url or (f"{opts.bundle_source}" + (f" ({opts.bundle_repo})" if opts.bundle_repo else ""))
    notes: list[str] = []
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.download-", dir=parent))
    except OSError as err:
        msg = f"{parent}: cannot create the bundle folder ({err.strerror or err})"
        raise BackendError(msg) from err
    try:
        verified = False
        if opts.bundle_url is not None:
            archive = staging / f"{name}.zip"
            _fetch(opts.bundle_url, archive, progress, label=f"downloading bundle {name}")
            digest = sha256_of(archive)
            if opts.bundle_sha256 is not None:
                _verify_sha256(digest, opts.bundle_sha256, opts.bundle_url)
                verified = True
            else:
                notes.append(
                    f"bundle {name}: unverified download from {opts.bundle_url} (SHA-256 {digest}; "
                    "set bundle_sha256 to check it)"
                )
        else:
            notes.append(f"bundle {name}: unverified download from {where} (segkit checks bundle_url archives only)")
        progress.start(f"{'unpacking' if opts.bundle_url else 'downloading'} bundle {name} ({where})", total=None)
        with warnings.catch_warnings(), _quiet_monai_loggers():
            if verified:
                # MONAI cannot know that segkit checked the archive against bundle_sha256 just above
                warnings.filterwarnings("ignore", message="No hash value provided")
            monai.bundle.download(
                name=name,
                version=opts.bundle_version,
                bundle_dir=str(staging),
                source=opts.bundle_source,
                repo=opts.bundle_repo,
                url=opts.bundle_url,
                progress=False,
            )
        got = staging / name
        if not (got / WEIGHTS).is_file():
            msg = f"the bundle downloaded from {where} has no {WEIGHTS.as_posix()} under {name}/"
            raise BackendError(msg, hint=_copy_hint(opts))
        if dest.exists():
            # an incomplete folder (e.g. configs without weights) is kept under another name, never deleted
            aside = parent / f"{name}.incomplete-{uuid.uuid4().hex[:6]}"
            os.replace(dest, aside)
            progress.log(f"moved the incomplete bundle folder {dest} to {aside}")
        os.replace(got, dest)
    except SegkitError:
        raise
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = f"cannot download bundle {name!r} from {where}: {reason}"
        raise BackendError(msg, hint=_copy_hint(opts)) from err
    finally:
        progress.finish()
        shutil.rmtree(staging, ignore_errors=True)
    progress.log(f"downloaded bundle {name} to {dest}")
    return dest, notes


@contextlib.contextmanager
def _quiet_monai_loggers() -> Iterator[None]:
    """MONAI's download loggers write INFO lines to stdout (segkit's results stream); mute them meanwhile."""
    names = [n for n in logging.root.manager.loggerDict if n == "monai" or n.startswith("monai.")]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _verify_sha256(digest: str, expected: str, url: str) -> None:
    if digest != expected.lower():
        msg = f"{url}: SHA-256 {digest} differs from bundle_sha256 {expected.lower()}; not unpacked"
        raise BackendError(msg)


def _fetch(url: str, dest: Path, progress: ProgressSink, *, label: str) -> None:
    """Stream `url` to `dest` atomically, reporting bytes to `progress`."""
    import urllib.parse
    import urllib.request

    from segkit.io import atomic_path

    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        msg = f"bundle URL {url!r}: only http, https and file URLs are supported"
        raise BackendError(msg)
    with urllib.request.urlopen(url, timeout=60) as response:  # the scheme is checked above
        length = response.headers.get("Content-Length")
        progress.start(label, total=int(length) if length and length.isdigit() else None)
        with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
            while chunk := response.read(1 << 20):
                fh.write(chunk)
                progress.advance(len(chunk))
