"""Load YAML config files, apply overlays and environment, validate into frozen objects.

This is the only module of lakestory that reads the process environment.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError

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


class _Loader(yaml.SafeLoader):
    """YAML as its version 1.2 reads it: only `true` and `false` are booleans, so a label's
    `yes`, `no`, `on` or `off` stays the text it is (PyYAML follows YAML 1.1, where they are
    booleans). Settings that are booleans still take `yes` and `no`: pydantic reads them."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
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
            keys = _yaml_keys(data, error["loc"], error["type"] == "missing")
            loc = tuple(str(part) for part in keys)
            where = next(
                (origin[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origin),
                next(iter(origin.values()), Path("<defaults>")),
            )
            key = ".".join(loc) or "(top level)"
            lines.append(f"{where}: {key}: {_message(model, error)}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _yaml_keys(data: Any, loc: tuple[str | int, ...], missing: bool) -> list[str | int]:
    """pydantic's location of an error as the YAML's keys: without the tags it adds for a
    choice of models (`sources.passengers.csv.label` is `sources.passengers.label`). Only a
    `missing` key's last part is not in the YAML."""
    keys: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        if in_dict or isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif i < len(loc) - 1 or not missing:  # not in the YAML: a union's tag
            continue
        keys.append(part)
    return keys


def _message(model: type[BaseModel], error: Any) -> str:
    """pydantic's message, without its `Value error, ` prefix; an unknown key lists the keys
    allowed where it is."""
    if error["type"] == "extra_forbidden":
        allowed = _keys_at(model, tuple(error["loc"][:-1]))
        if allowed:
            return f"unknown key; the keys allowed here are {', '.join(allowed)}"
        return "unknown key"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _keys_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys of the config model that pydantic's `loc` (tags included) points into."""
    current: Any = model
    parts = list(loc)
    while True:
        current = _unwrapped(current)
        members = _union_members(current)
        if members:
            if not parts:
                return []
            tag = parts.pop(0)
            current = next((m for m in members if _tagged(m, tag)), None)
            continue
        if not parts:
            break
        part = parts.pop(0)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = current.model_fields
            name = next((n for n, f in fields.items() if part in (n, f.alias)), None)
            current = fields[name].annotation if name else None
        elif get_origin(current) in (dict, list, tuple):
            current = get_args(current)[-1 if get_origin(current) is dict else 0]
        else:
            return []
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [f.alias or n for n, f in current.model_fields.items()]


def _unwrapped(t: Any) -> Any:
    """`t` without `Annotated[...]` and without `| None`."""
    while get_origin(t) is Annotated:
        t = get_args(t)[0]
    if get_origin(t) in (Union, UnionType):
        members = [m for m in get_args(t) if m is not type(None)]
        if len(members) == 1:
            return _unwrapped(members[0])
    return t


def _union_members(t: Any) -> tuple[Any, ...]:
    if get_origin(t) in (Union, UnionType):
        return get_args(t)
    return ()


def _tagged(member: Any, tag: str | int) -> bool:
    """Whether a union's `member` is the one pydantic's `tag` names: by its `Tag`, or by the
    value of its discriminating literal field (a source's `format`)."""
    if get_origin(member) is Annotated and any(
        isinstance(a, Tag) and a.tag == tag for a in get_args(member)[1:]
    ):
        return True
    base = _unwrapped(member)
    if isinstance(base, type) and issubclass(base, BaseModel):
        return any(
            get_origin(f.annotation) is Literal and tag in get_args(f.annotation)
            for f in base.model_fields.values()
        )
    return False


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


def dataset_path(name: str, conf_dir: Path | None = None) -> Path:
    """The file that declares dataset `name`: conf/datasets/<name>.yaml."""
    return (conf_dir or default_conf_dir()) / "datasets" / f"{name}.yaml"


def load_dataset(name: str, conf_dir: Path | None = None, env: str | None = None) -> Dataset:
    """Read conf/datasets/<name>.yaml with its overlays conf/<env>/datasets/ and conf/local/."""
    conf_dir = conf_dir or default_conf_dir()
    path = dataset_path(name, conf_dir)
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
