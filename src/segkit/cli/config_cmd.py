"""``segkit config``: the run-config schema and the resolved config."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from pydantic import BaseModel

from segkit.cli._backend_flags import DatasetOpt, NnUNetPreprocessedOpt, NnUNetRawOpt, NnUNetResultsOpt
from segkit.cli._common import ConfigOpt, SetOpt, resolve
from segkit.config.load import dump_config
from segkit.config.models import SegkitConfig
from segkit.errors import ConfigError, did_you_mean

app = typer.Typer(help="Inspect run configs: JSON schema and resolved values.", no_args_is_help=True)


@app.command()
def schema(
    section: Annotated[str | None, typer.Argument(help="Only this section, e.g. prepare.")] = None,
) -> None:
    """Print the JSON schema of run configs (every option, type, default and description)."""
    full = SegkitConfig.model_json_schema()
    if section is not None:
        fields = SegkitConfig.model_fields
        if section not in fields:
            msg = f"no config section {section!r}{did_you_mean(section, fields)}"
            raise ConfigError(msg)
        annotation = fields[section].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model: type[BaseModel] = annotation
            full = model.model_json_schema()
        else:
            full = full["properties"][section]
    sys.stdout.write(json.dumps(full, indent=2) + "\n")


@app.command()
def show(
    config: ConfigOpt = None,
    sets: SetOpt = None,
    dataset_id: DatasetOpt = None,
    nnunet_raw: NnUNetRawOpt = None,
    nnunet_preprocessed: NnUNetPreprocessedOpt = None,
    nnunet_results: NnUNetResultsOpt = None,
) -> None:
    """Print the fully resolved run config as YAML (defaults < environment < YAML < --set < flag).

    A comment block at the end says where the nnU-Net folders and every non-default value came from.
    """
    from segkit.config.load import source_of

    cfg = resolve(
        config,
        sets,
        dataset=dataset_id,
        nnunet__raw=nnunet_raw,
        nnunet__preprocessed=nnunet_preprocessed,
        nnunet__results=nnunet_results,
    )
    lines = [f"#   nnunet.{key}: {source_of(cfg, f'nnunet.{key}')}" for key in ("raw", "preprocessed", "results")]
    lines += [f"#   {key}: {source}" for key, source in sorted(cfg._sources.items()) if not key.startswith("nnunet.")]
    sys.stdout.write(dump_config(cfg) + "# where the values come from (anything not listed: default):\n")
    sys.stdout.write("\n".join(lines) + "\n")
