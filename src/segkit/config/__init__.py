"""Run configuration: pydantic models and the YAML / ``--set`` / flag loader."""

from segkit.config.load import dump_config, load_config
from segkit.config.models import SegkitConfig

__all__ = ["SegkitConfig", "dump_config", "load_config"]
