from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from lakestory.config import ConfigError, load_dataset
from lakestory.config.models import Quantization
from tests.conftest import CONF


def test_the_gate_defaults_to_one_point_of_accuracy() -> None:
    quantization = load_dataset("customers", CONF).model_spec.quantization
    assert quantization == Quantization(
        max_accuracy_drop=0.01, calibration_rows=1024, require_batch_invariance=True
    )


@pytest.mark.parametrize(
    "values", [{"max_accuracy_drop": -0.01}, {"max_accuracy_drop": 1.5}, {"calibration_rows": 0}]
)
def test_a_drop_outside_0_to_1_or_no_calibration_rows_is_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Quantization.model_validate(values)


def test_the_yaml_key_is_checked_with_its_file_named(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("local"))
    path = conf / "datasets" / "customers.yaml"
    text = path.read_text().replace(
        "  # quantization: {max_accuracy_drop: 0.01", "  quantization: {max_accuracy_drop: 0.005"
    )
    path.write_text(text)
    assert load_dataset("customers", conf).model_spec.quantization.max_accuracy_drop == 0.005
    path.write_text(text.replace("max_accuracy_drop: 0.005", "max_drop: 0.005"))
    with pytest.raises(ConfigError, match=r"customers\.yaml.*model\.quantization\.max_drop"):
        load_dataset("customers", conf)
