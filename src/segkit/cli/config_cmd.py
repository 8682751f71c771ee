"""``segkit config``: the run-config schema and the resolved config."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from pydantic import BaseModel

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
def show(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Print the fully resolved run config as YAML (defaults < YAML < --set)."""
    sys.stdout.write(dump_config(resolve(config, sets)))
