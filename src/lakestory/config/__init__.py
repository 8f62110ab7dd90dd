"""Typed, validated configuration loaded from conf/ + overlays + environment."""

from lakestory.config.loader import (
    ConfigError,
    MissingSecretError,
    create_key_file,
    load_dataset,
    load_settings,
    load_token_key,
)
from lakestory.config.models import Dataset, Settings, Source

__all__ = [
    "ConfigError",
    "Dataset",
    "MissingSecretError",
    "Settings",
    "Source",
    "create_key_file",
    "load_dataset",
    "load_settings",
    "load_token_key",
]
