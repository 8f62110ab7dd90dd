"""The chaos bench's view of a warehouse's MLflow registry (SQLite at <root>/mlflow.db): the
versions of a registered model, its aliases, and whether each alias's version still has its
artifacts.

The registry is read in a short subprocess of its own (`registry`), run as
`python _chaos_registry.py ROOT MODEL`: MLflow keeps a pooled SQLite connection per store
URI, and the bench replaces the warehouse folder, database file included, between runs; a
connection kept open across that would read a file that is no longer there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

STORE = "mlflow.db"


@dataclass(frozen=True)
class Registry:
    versions: tuple[str, ...] = ()  # every registered version of the model, as MLflow numbers it
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> version
    missing: dict[str, str] = field(default_factory=dict)  # alias -> what of its artifacts is gone


def registry(root: Path, model: str, timeout: float = 300) -> Registry:
    """The model's versions and aliases in the warehouse at `root` (empty if it has no store)."""
    if not (root / STORE).is_file():
        return Registry()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(root), model],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"reading the registry failed: {done.stderr.strip()[-2000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Registry(tuple(data["versions"]), data["aliases"], data["missing"])


def _local(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file"):
        raise ValueError(f"not a local artifact location: {uri}")
    return Path(unquote(parts.path))


def _missing_artifacts(folder: Path) -> str | None:
    """What is gone from a logged model's folder: its MLmodel, or a flavor's data file."""
    import yaml

    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        return f"no MLmodel under {folder}"
    flavors: dict[str, Any] = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
    for name, flavor in flavors.items():
        for key in ("data", "model_data"):
            data = flavor.get(key) if isinstance(flavor, dict) else None
            if not data:
                continue
            path = folder / data
            if not path.exists() or (path.is_dir() and not any(path.iterdir())):
                return f"flavor {name}: {key} {path} is missing or empty"
    return None


def _read(root: Path, model: str) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{root / STORE}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        found = client.search_model_versions(f"name='{model}'")
        aliases = dict(client.get_registered_model(model).aliases)
    except MlflowException:  # no such model yet
        return {"versions": [], "aliases": {}, "missing": {}}
    versions = sorted((v.version for v in found), key=int)
    missing = {}
    for alias, version in aliases.items():
        try:
            where = _local(client.get_model_version_download_uri(model, str(version)))
            problem = _missing_artifacts(where)
        except (MlflowException, ValueError, OSError) as exc:
            problem = f"its artifacts cannot be found: {exc}"
        if problem:
            missing[alias] = f"v{version}: {problem}"
    return {
        "versions": [str(v) for v in versions],
        "aliases": {a: str(v) for a, v in aliases.items()},
        "missing": missing,
    }


if __name__ == "__main__":
    print(json.dumps(_read(Path(sys.argv[1]), sys.argv[2])))
