"""The catalog: the one place that names a dataset's tables, folders and artifacts.

Every table of the warehouse is `<layer>.<dataset>_<what>`, stored at `<root>/<layer>/<name>`;
every streaming checkpoint, landing folder, feed, report and artifact folder has one place
under the root too. Stages ask the catalog (`Catalog(dataset, settings).silver("accounts")`)
and never build a name or a path themselves, so that renaming or moving a table is a change
here alone; `tests/unit/test_catalog.py` greps `src/` to keep it so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lakestory.config import BinarySource, Dataset, Settings, Source
from lakestory.io.tables import RESTRICTED, TableRef

# warehouse-wide tables of the `ops` layer: one row per run, batch, file or erasure
STAGE_RUNS = TableRef("ops", "stage_runs")
QUALITY_METRICS = TableRef("ops", "quality_metrics")
INGESTION_FILES = TableRef("ops", "ingestion_files")
SCHEMA_DRIFT = TableRef("ops", "schema_drift")
INGESTION_RUNS = TableRef("ops", "ingestion_runs")
ERASURES = TableRef("ops", "erasures")

UNLABELED_SUFFIX = "_unlabeled"


@dataclass(frozen=True)
class Catalog:
    """The tables and places of one dataset of the warehouse at `settings.root`. Names need
    only the dataset; places (locations, folders) need the settings too."""

    dataset: Dataset
    settings: Settings | None = None

    @property
    def root(self) -> Path:
        if self.settings is None:
            raise ValueError(f"the catalog of {self.dataset.name} was made without settings")
        return self.settings.root

    def _named(self, layer: str, what: str) -> TableRef:
        return TableRef(layer, f"{self.dataset.name}_{what}")

    # tables
    def bronze(self, source: str) -> TableRef:
        """The raw rows (or files) of a source, as landed."""
        return self._named("bronze", source)

    def silver(self, source: str) -> TableRef:
        """A structured source's typed, de-duplicated, pseudonymised rows."""
        return self._named("silver", source)

    def unlabeled(self, source: str) -> TableRef:
        """Rows whose label is missing or invalid, kept for later labelling."""
        return self._named("silver", f"{source}{UNLABELED_SUFFIX}")

    def quarantine(self, source: str) -> TableRef:
        """Every rejected row of a source, raw, with the reasons it was rejected."""
        return self._named("quarantine", source)

    def features(self) -> TableRef:
        return self._named("gold", "features")

    def feature_params(self) -> TableRef:
        """The transforms fitted on train, one row per version."""
        return self._named("gold", "feature_params")

    def predictions(self) -> TableRef:
        return self._named("gold", "predictions")

    def vault(self) -> TableRef:
        """The links from identifiers' tokens to artificial ids."""
        return self._named(RESTRICTED, "vault")

    def erasures(self) -> TableRef:
        """The tombstone list: tokens and raw-row hashes of erased subjects."""
        return self._named(RESTRICTED, "erasures")

    def owns(self, name: str) -> bool:
        """Whether the table called `name` (in any layer) is one of this dataset's."""
        return name.startswith(f"{self.dataset.name}_")

    def source_of(self, table: TableRef) -> str | None:
        """The source whose bronze, silver or quarantine table `table` is, if any."""
        for name in self.dataset.sources:
            if table.name == self._named(table.layer, name).name:
                return name
        return None

    def stored(self, layers: tuple[str, ...]) -> list[TableRef]:
        """The dataset's tables that exist on disk in `layers`, in name order."""
        found = []
        for layer in layers:
            folder = self.root / layer
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if self.owns(entry.name) and (entry / "_delta_log").is_dir():
                    found.append(TableRef(layer, entry.name))
        return found

    # places
    def location(self, table: TableRef) -> str:
        """Where the Delta table is stored, as Spark and Delta take a path."""
        return str(self.root / table.layer / table.name)

    def checkpoint(self, table: TableRef) -> str:
        """The streaming checkpoint of the stream that writes `table`."""
        return str(self.root / "_checkpoints" / table.layer / table.name)

    def run_marker(self, table: TableRef) -> str:
        """A file beside the stream's checkpoint that says a run writing `table` began and
        has not finished recording itself (see `operations.ingest`)."""
        return f"{self.checkpoint(table)}/_lakestory_run"

    def stage_marker(self, stage: str) -> str:
        """A file that says a run of the dataset's `stage` began and has not recorded itself
        in `ops.stage_runs`, with the run's id (see `io.runs.Underway`)."""
        return str(self.root / "_checkpoints" / "_stages" / self.dataset.name / stage)

    def landing(self, source: Source | BinarySource) -> str:
        """The folder a source's files are dropped in."""
        return str(self.root / "landing" / source.path)

    def artifacts(self, model: str, version: int | str) -> Path:
        """The folder of a registered model version's converted files and report."""
        return self.root / "artifacts" / self.dataset.name / model / f"v{version}"

    def feeds(self) -> Path:
        """The folder under which training runs materialise their data feeds."""
        return self.root / "_feeds"


def checkpoint_path(settings: Settings, table: TableRef) -> Path:
    """One streaming checkpoint per table."""
    return settings.root / "_checkpoints" / table.layer / table.name


def landing_root(settings: Settings) -> Path:
    """The landing zone: one folder per dataset, one below it per source."""
    return settings.root / "landing"


def logs_folder(settings: Settings) -> Path:
    """Where the runs' logs go: one file per command run (`lakestory.console`)."""
    return settings.root / "logs"


def report_folder(settings: Settings, table: TableRef) -> Path:
    """Where the profiles of a table go, one pair of files (HTML, JSON) per version."""
    return settings.root / "reports" / table.qualified


def mlflow_artifacts(settings: Settings) -> Path:
    """The artifact store of the local MLflow tracking store."""
    return settings.root / "mlartifacts"
