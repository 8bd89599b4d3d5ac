"""Config machinery (frozen dataclasses, YAML, strict dotted overrides) and the recipe schemas."""

from xai_train.config.core import (
    ConfigError,
    check_like_section,
    load_config,
    parse_override,
    read_yaml,
    save_config,
    to_dict,
)

__all__ = ["ConfigError", "check_like_section", "load_config", "parse_override", "read_yaml", "save_config", "to_dict"]
