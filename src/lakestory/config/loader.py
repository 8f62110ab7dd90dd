"""Load YAML config files, apply overlays and environment, validate into frozen objects.

This is the only module of lakestory that reads the process environment.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lakestory.config.models import Dataset, Settings

M = TypeVar("M", bound=BaseModel)

ROOT_ENV = "LAKESTORY_ROOT"
CONF_DIR_ENV = "LAKESTORY_CONF_DIR"
MIN_KEY_BYTES = 32


class ConfigError(ValueError):
    """A config file is missing, unreadable or invalid; the message names file and key."""


class MissingSecretError(RuntimeError):
    """A secret the run needs is not provided; the message says how to provide it."""


def default_conf_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get(CONF_DIR_ENV, "conf"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _merge(
    base: dict[str, Any],
    overlay: dict[str, Any],
    origin: dict[tuple[str, ...], Path],
    source: Path,
    prefix: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Deep-merge `overlay` into `base`, recording which file set each key."""
    merged = dict(base)
    for key, value in overlay.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value, origin, source, path)
        else:
            merged[key] = value
            for known in [p for p in origin if p[: len(path)] == path]:
                del origin[known]
        origin[path] = source
    return merged


def _load_layers(files: list[Path]) -> tuple[dict[str, Any], dict[tuple[str, ...], Path]]:
    data: dict[str, Any] = {}
    origin: dict[tuple[str, ...], Path] = {}
    for path in files:
        if path.is_file():
            data = _merge(data, _read_yaml(path), origin, path)
    return data, origin


def _validate(model: type[M], data: dict[str, Any], origin: dict[tuple[str, ...], Path]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            where = next(
                (origin[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origin),
                next(iter(origin.values()), Path("<defaults>")),
            )
            key = ".".join(loc) or "(top level)"
            lines.append(f"{where}: {key}: {error['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _overlays(conf_dir: Path, relative: str, env: str | None) -> list[Path]:
    """The overlay files for `relative`: conf/<env>/ (which must exist if named), conf/local/."""
    layers = []
    if env:
        if not (conf_dir / env).is_dir():
            raise ConfigError(f"{conf_dir / env}: no such environment overlay (--env {env})")
        layers.append(conf_dir / env / relative)
    layers.append(conf_dir / "local" / relative)
    return layers


def load_settings(
    conf_dir: Path | None = None,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read conf/base/lakestory.yaml, then conf/<env>/, then conf/local/, then the environment.

    `LAKESTORY_ROOT` overrides `warehouse.root`.
    """
    environ = os.environ if environ is None else environ
    conf_dir = conf_dir or default_conf_dir(environ)
    base = conf_dir / "base" / "lakestory.yaml"
    if not base.is_file():
        raise ConfigError(f"{base}: not found (run from the project root or set {CONF_DIR_ENV})")
    data, origin = _load_layers([base, *_overlays(conf_dir, "lakestory.yaml", env)])
    if environ.get(ROOT_ENV):
        data = _merge(data, {"warehouse": {"root": environ[ROOT_ENV]}}, origin, Path(ROOT_ENV))
    return _validate(Settings, data, origin)


def dataset_names(conf_dir: Path | None = None) -> list[str]:
    """The datasets declared in conf/datasets/, by name."""
    conf_dir = conf_dir or default_conf_dir()
    return sorted(p.stem for p in (conf_dir / "datasets").glob("*.yaml"))


def load_dataset(name: str, conf_dir: Path | None = None, env: str | None = None) -> Dataset:
    """Read conf/datasets/<name>.yaml with its overlays conf/<env>/datasets/ and conf/local/."""
    conf_dir = conf_dir or default_conf_dir()
    path = conf_dir / "datasets" / f"{name}.yaml"
    if not path.is_file():
        known = dataset_names(conf_dir)
        raise ConfigError(f"{path}: no such dataset (known: {', '.join(known) or 'none'})")
    data, origin = _load_layers([path, *_overlays(conf_dir, f"datasets/{name}.yaml", env)])
    dataset = _validate(Dataset, data, origin)
    dataset._origin.update(origin)
    if dataset.name != name:
        raise ConfigError(f"{path}: name: {dataset.name!r} differs from the file name {name!r}")
    return dataset


def _how(settings: Settings) -> str:
    return (
        f"provide a key of at least {MIN_KEY_BYTES} bytes: set {settings.privacy.key_env} "
        f"(e.g. `export {settings.privacy.key_env}=$(openssl rand -hex 32)`) or write one to "
        f"{settings.privacy.key_file} with mode 0600 (`lakestory demo` creates a local one)"
    )


def load_token_key(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes:
    """Return the pseudonymisation key from the environment or the key file.

    The key itself never appears in an error message.
    """
    environ = os.environ if environ is None else environ
    how = _how(settings)
    value = environ.get(settings.privacy.key_env)
    if not value:
        return read_key_file(settings, settings.privacy.key_file, how)
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        origin = f"${settings.privacy.key_env}"
        raise MissingSecretError(f"the token key from {origin} is too short; {how}")
    return key


def read_key_file(settings: Settings, path: Path, how: str | None = None) -> bytes:
    """A key from a file that only its owner may read, outside the warehouse, long enough."""
    how = how or (
        f"write a key of at least {MIN_KEY_BYTES} bytes to {path} with mode 0600 "
        "(e.g. `(umask 077; openssl rand -hex 32 > FILE)`)"
    )
    if not path.is_file():
        raise MissingSecretError(f"no token key: {path} does not exist; {how}")
    if path.resolve().is_relative_to(settings.root):
        raise MissingSecretError(f"the key file {path} lies inside the warehouse; {how}")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise MissingSecretError(f"the key file {path} is readable by others; chmod 600 it")
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        why = f"cannot read the key file {path} ({exc.strerror})"
        raise MissingSecretError(f"{why}; {how}") from None
    if len(key) < MIN_KEY_BYTES:
        raise MissingSecretError(f"the token key from {path} is too short; {how}")
    return key


def create_key_file(path: Path) -> bool:
    """Create a random key file with mode 0600 unless one exists. Returns True if created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(os.urandom(32).hex())
    return True
