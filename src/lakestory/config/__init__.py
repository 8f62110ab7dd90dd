"""Typed, validated configuration loaded from conf/ + overlays + environment."""

from lakestory.config.loader import (
    ConfigError,
    MissingSecretError,
    create_key_file,
    dataset_names,
    dataset_path,
    default_conf_dir,
    load_dataset,
    load_settings,
    load_token_key,
    read_key_file,
)
from lakestory.config.models import BinarySource, Dataset, Settings, Source

__all__ = [
    "ConfigError",
    "Dataset",
    "MissingSecretError",
    "Settings",
    "Source",
    "BinarySource",
    "create_key_file",
    "dataset_names",
    "dataset_path",
    "default_conf_dir",
    "load_dataset",
    "load_settings",
    "load_token_key",
    "read_key_file",
]
