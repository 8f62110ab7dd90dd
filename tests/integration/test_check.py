"""`lakestory check`: a dataset's config against a sample of its landing files, forecasting
refine's fates with refine's own rules and naming each problem's config key."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession

from lakestory.cli import main
from lakestory.config import Dataset, Settings, load_dataset
from lakestory.io import Catalog
from lakestory.operations.check import check_dataset
from tests.conftest import CONF

pytestmark = pytest.mark.slow

CONFIG = Path("conf/datasets/voyage.yaml")  # named in the messages only


def _land(settings: Settings, path: str, text: str) -> None:
    folder = settings.root / "landing" / path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-1.csv").write_text(text)


def _dataset(
    name: str,
    schema: dict[str, str],
    label: dict[str, Any],
    dropped: tuple[str, ...] = (),
    **more: Any,
) -> Dataset:
    return Dataset.model_validate(_config(name, schema, label, dropped, **more))


def _config(
    name: str,
    schema: dict[str, str],
    label: dict[str, Any],
    dropped: tuple[str, ...] = (),
    **more: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "seed": 1,
        "sources": {
            "passengers": {
                "format": "csv",
                "path": f"{name}/passengers",
                "options": {"header": "true"},
                "schema": schema,
                "key": "ticket",
                "required": ["ticket"],
                "label": {"column": "survived", **label},
                "personal": {"drop": list(dropped)},
            },
            **more,
        },
        "features": {
            "source": "passengers",
            "key": "ticket",
            "label": "survived",
            "columns": [c for c in schema if c not in ("ticket", "survived", *dropped)],
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2},
        },
    }


ROWS = "ticket,age,fare,survived\nt1,22,7.25,no\nt2,38,71.3,yes\nt3,,8.05,yes\nt4,35,x,no\n"
SCHEMA = {"ticket": "string", "age": "int", "fare": "double", "survived": "string"}


def test_a_sound_config_gets_refine_s_forecast(spark: SparkSession, settings: Settings) -> None:
    _land(settings, "sound/passengers", ROWS + "t5,40,9.5,maybe\nt6,41,9.5,\n")
    ds = _dataset("sound", SCHEMA, {"positive": "yes", "negative": "no"})

    forecast = check_dataset(spark, settings, ds, CONFIG)

    assert forecast.ok, str(forecast)
    (source,) = forecast.sources
    assert (source.files, source.rows, source.silver, source.quarantined) == (1, 6, 3, 3)
    assert source.reasons == {"castable:fare:double": 1, "label_invalid": 1, "label_missing": 1}
    text = str(forecast)
    assert "1 of 5 sampled labels match no class (values 'maybe')" in text, text
    assert "fare: 1 of 6 values (16.67%) do not cast to double" in text, text
    assert "classes found: no, yes" in text and "ok: nothing in the sample stops a run" in text


def test_what_would_stop_a_run_is_named_by_key_and_file(
    spark: SparkSession, settings: Settings
) -> None:
    _land(settings, "broken/passengers", ROWS.replace(",fare", ",fare_paid"))
    schema = {**SCHEMA, "ticket": "string", "age": "date"}
    images = {"format": "binary", "path": "broken/images"}  # nothing landed there
    # age is personal: a problem with it shows no value
    ds = _dataset("broken", schema, {"classes": ["survived", "died"]}, ("age",), images=images)

    forecast = check_dataset(spark, settings, ds, CONFIG)

    assert not forecast.ok
    problems = {p.key: p.message for p in forecast.problems}
    assert set(problems) == {
        "sources.passengers.schema.fare",
        "sources.passengers.schema.age",
        "sources.passengers.label",
        "sources.passengers",
        "sources.images.path",
    }, problems
    assert "no sampled file has this column" in problems["sources.passengers.schema.fare"]
    assert "none of the 3 sampled values casts to date" in problems["sources.passengers.schema.age"]
    assert "(for example not shown: a personal column)" in problems["sources.passengers.schema.age"]
    assert "4 of 4 sampled labels match no class" in problems["sources.passengers.label"]
    assert "'no', 'yes'" in problems["sources.passengers.label"]
    assert "the classes are survived, died" in problems["sources.passengers.label"]
    assert "silver empty" in problems["sources.passengers"]
    assert "no files under" in problems["sources.images.path"]
    text = str(forecast)
    assert f"{CONFIG}: sources.passengers.label: " in text and "5 problem(s):" in text, text


def test_a_run_the_check_warned_of_stops_with_what_to_change_and_writes_nothing(
    spark: SparkSession,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every label outside the mapping: refine quarantines every row, and `lakestory run`
    stops at features with what happened and what to look at (exit 1, no traceback), before
    a params version is written."""
    monkeypatch.setenv("LAKESTORY_TOKEN_KEY", "check-test-key-0123456789abcdef0123")
    monkeypatch.setenv("LAKESTORY_ROOT", str(settings.root))
    _land(settings, "wreck/passengers", ROWS)
    config = _config("wreck", SCHEMA, {"positive": "Yes", "negative": "No"})
    conf = tmp_path / "conf"
    shutil.copytree(CONF / "base", conf / "base")
    (conf / "datasets").mkdir()
    (conf / "datasets" / "wreck.yaml").write_text(yaml.safe_dump(config))

    status = main(["run", "wreck", "--conf-dir", str(conf)])  # in-process: output unparted

    out, err = capsys.readouterr()
    assert status == 1, (out, err)
    assert err.strip() == (
        "lakestory: silver.wreck_passengers is empty; 4 rows were quarantined (label_invalid: "
        "4, castable:fare:double: 1); see lakestory quarantine wreck and the classes of "
        "sources.passengers.label"
    ), err
    assert "refine    ran" in out and "features" not in out and "Traceback" not in err
    ds = load_dataset("wreck", conf)
    assert not Path(Catalog(ds, settings).feature_params().path(settings)).exists()
    assert not Path(Catalog(ds, settings).features().path(settings)).exists()
