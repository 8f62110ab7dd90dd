from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lakestory.config import (
    BinarySource,
    ConfigError,
    MissingSecretError,
    create_key_file,
    load_dataset,
    load_settings,
    load_token_key,
)
from tests.conftest import CONF


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    target = tmp_path / "conf"
    shutil.copytree(CONF, target, ignore=shutil.ignore_patterns("local"))
    return target


def test_shipped_config_loads() -> None:
    settings = load_settings(CONF, environ={})
    dataset = load_dataset("customers", CONF)
    assert settings.spark.master == "local[*]"
    assert dataset.features.names[-3:] == ["n_transactions", "total_amount", "main_channel"]
    assert dataset.features.transform("main_channel").encode == "onehot"
    assert "name" not in dataset.sources["accounts"].silver_columns()


def test_unknown_key_names_file_and_key(conf: Path) -> None:
    path = conf / "datasets" / "customers.yaml"
    path.write_text(path.read_text().replace("  epochs: 30", "  epochs: 30\n  epoks: 3"))
    with pytest.raises(ConfigError) as err:
        load_dataset("customers", conf)
    assert str(path) in str(err.value)
    assert "model.epoks: unknown key; the keys allowed here are registered_name, hidden" in str(
        err.value
    )


def test_an_unknown_key_inside_a_source_lists_that_source_kind_s_keys(conf: Path) -> None:
    path = conf / "datasets" / "customers.yaml"
    text = path.read_text()
    path.write_text(
        text.replace("      allowed: [0, 1]", "      allowed: [0, 1]\n      positve: 1")
    )
    with pytest.raises(ConfigError) as err:
        load_dataset("customers", conf)
    message = str(err.value)
    assert "sources.accounts.label.positve: unknown key; the keys allowed here are" in message
    assert "positive, negative, classes, ignore_case" in message and ".csv." not in message


def test_wrong_type_names_the_overlay_that_set_it(conf: Path) -> None:
    (conf / "ci").mkdir()
    overlay = conf / "ci" / "lakestory.yaml"
    overlay.write_text("spark:\n  conf: not-a-mapping\n")
    with pytest.raises(ConfigError) as err:
        load_settings(conf, env="ci", environ={})
    assert f"{overlay}: spark.conf:" in str(err.value)


def test_env_overlay_then_local_overlay(conf: Path) -> None:
    (conf / "cluster").mkdir()
    (conf / "cluster" / "lakestory.yaml").write_text("spark:\n  master: spark://h:7077\n")
    (conf / "local").mkdir()
    (conf / "local" / "lakestory.yaml").write_text("warehouse:\n  root: /data/lake\n")
    settings = load_settings(conf, env="cluster", environ={})
    assert settings.spark.master == "spark://h:7077"
    assert settings.spark.conf["spark.sql.shuffle.partitions"] == "4"  # base kept
    assert settings.root == Path("/data/lake")


def test_unknown_env_is_an_error(conf: Path) -> None:
    with pytest.raises(ConfigError, match="no such environment overlay"):
        load_settings(conf, env="nope", environ={})


def test_root_from_environment(conf: Path, tmp_path: Path) -> None:
    settings = load_settings(conf, environ={"LAKESTORY_ROOT": str(tmp_path / "w")})
    assert settings.root == tmp_path / "w"


def test_feature_referring_to_a_dropped_column_is_rejected(conf: Path) -> None:
    path = conf / "datasets" / "customers.yaml"
    path.write_text(path.read_text().replace("    - credit_score\n", "    - phone\n", 1))
    with pytest.raises(ConfigError, match="phone"):
        load_dataset("customers", conf)


def test_a_tokenised_phone_column_needs_a_country_code(conf: Path) -> None:
    path = conf / "datasets" / "customers.yaml"
    text = path.read_text()
    tokenised = (
        "        customer_id: id               # silver: customer_id_pseudonym, an artificial id\n"
    )
    assert tokenised in text
    path.write_text(
        text.replace(
            "      drop: [name, email, phone, address]", "      drop: [name, address]"
        ).replace(tokenised, tokenised + "        email: email\n        phone: phone\n", 1)
    )
    with pytest.raises(ConfigError) as err:
        load_dataset("customers", conf)
    assert str(path) in str(err.value)
    # the key as the YAML has it: no union tag (`sources.accounts.csv.personal`)
    assert "sources.accounts.personal:" in str(err.value) and "country_code" in str(err.value)
    path.write_text(
        path.read_text().replace(
            "      drop: [name, address]", '      drop: [name, address]\n      country_code: "1"'
        )
    )
    personal = load_dataset("customers", conf).sources["accounts"].personal
    assert personal.tokenize["phone"] == "phone" and personal.country_code == "1"


def test_key_from_environment(conf: Path) -> None:
    settings = load_settings(conf, environ={})
    key = "k" * 40
    assert load_token_key(settings, {"LAKESTORY_TOKEN_KEY": key}) == key.encode()


def test_missing_key_says_how_to_provide_one(conf: Path, tmp_path: Path) -> None:
    (conf / "local").mkdir()
    missing = tmp_path / "nope.key"
    (conf / "local" / "lakestory.yaml").write_text(f"privacy:\n  key_file: {missing}\n")
    settings = load_settings(conf, environ={})
    with pytest.raises(MissingSecretError) as err:
        load_token_key(settings, {})
    assert "LAKESTORY_TOKEN_KEY" in str(err.value) and str(missing) in str(err.value)


def test_short_key_is_refused_without_echoing_it(conf: Path) -> None:
    settings = load_settings(conf, environ={})
    with pytest.raises(MissingSecretError) as err:
        load_token_key(settings, {"LAKESTORY_TOKEN_KEY": "sekrit-short"})
    assert "too short" in str(err.value)
    assert "sekrit-short" not in str(err.value)


def test_key_file_is_private_and_read_back(conf: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "token.key"
    assert create_key_file(key_file)
    assert not create_key_file(key_file)  # never overwritten
    assert key_file.stat().st_mode & 0o777 == 0o600
    (conf / "local").mkdir()
    (conf / "local" / "lakestory.yaml").write_text(f"privacy:\n  key_file: {key_file}\n")
    settings = load_settings(conf, environ={})
    assert load_token_key(settings, {}) == key_file.read_bytes().strip()
    key_file.chmod(0o644)
    with pytest.raises(MissingSecretError, match="readable by others"):
        load_token_key(settings, {})


def test_binary_sources_parse_and_their_options_are_checked(conf: Path) -> None:
    digits = load_dataset("digits", conf)
    images = digits.sources["images"]
    assert isinstance(images, BinarySource) and images.kind == "image"
    assert list(digits.structured()) == ["labels"]
    assert digits.image_spec is not None and digits.classes == 10
    assert digits.features_key == "sha256"
    path = conf / "datasets" / "digits.yaml"
    path.write_text(path.read_text().replace("content: inline", "content: inlined"))
    with pytest.raises(ConfigError) as err:
        load_dataset("digits", conf)
    assert "digits.yaml: sources.images.content" in str(err.value)


def test_a_binary_source_cannot_feed_tabular_features(conf: Path) -> None:
    path = conf / "datasets" / "customers.yaml"
    text = path.read_text().replace(
        "  transactions:\n    format: json\n", "  transactions:\n    format: binary\n", 1
    )
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_dataset("customers", conf)
    assert "customers.yaml: sources.transactions." in str(err.value)
    assert "sources.transactions.binary" not in str(err.value)


def test_a_transform_of_no_feature_names_the_column(conf: Path) -> None:
    path = conf / "datasets" / "customers.yaml"
    path.write_text(path.read_text().replace("    balance: {scale: robust}", "    balanse: {}"))
    with pytest.raises(ConfigError) as err:
        load_dataset("customers", conf)
    assert str(path) in str(err.value) and "balanse" in str(err.value)


def test_the_shipped_tune_space_is_read() -> None:
    tune = load_dataset("customers", CONF).tune_spec
    assert tune.metric == "val_loss" and tune.trials > 0
    assert tune.space["hidden"].choices == [[32], [64, 32], [128, 64]]
    assert tune.space["learning_rate"].log


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # not a setting of the model that tuning may change
        ("    num_processes: {choices: [1, 2]}", "cannot tune ['num_processes']"),
        # a global batch smaller than the feed's 8 shards
        ("    batch_size: {choices: [64, 4]}", "tune.space.batch_size: 4"),
        ("    dropout: {low: 0.5, high: 0.2}", "low (0.5) must be below high (0.2)"),
        ("    dropout: {low: 0.0, high: 1.0}", "tune.space.dropout: 1.0"),
        ("    epochs: {low: 5, high: 20.5}", "epochs takes integers"),
        ("    learning_rate: {low: 0, high: 0.1, log: true}", "a log range needs low > 0"),
        ("    optimizer: {choices: [adamw, lion]}", "tune.space.optimizer: 'lion'"),
        ("    hidden: {}", "give either choices or both low and high"),
    ],
)
def test_a_bad_tune_space_names_the_setting(conf: Path, line: str, expected: str) -> None:
    path = conf / "datasets" / "customers.yaml"
    text = path.read_text()
    assert text.count("  space:\n") == 1
    # the space is the last mapping of the file: this line is now all of it
    path.write_text(text[: text.index("  space:\n")] + f"  space:\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_dataset("customers", conf)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("\n  images: images", "\n  images: labels", "features.images 'labels' is not a binary"),
        ("\n  labels: labels", "\n  labels: images", "features.labels 'images' is not a struct"),
        ("\n  file: file_name", "\n  file: filename", "features.file 'filename' is not a column"),
        ("\n  label: label", "\n  label: digit", "features.label 'digit' is not the label"),
        ("allowed: [0, 1, 2, 3", "allowed: [1, 2, 3", "must be the classes 0, 1, ... in order"),
        ("  num_processes: 2", "  num_processes: 3", "feed_shards (8) must be a multiple"),
    ],
)
def test_bad_image_features_name_the_key_and_file(
    conf: Path, old: str, new: str, expected: str
) -> None:
    path = conf / "datasets" / "digits.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_dataset("digits", conf)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_augmentation_is_for_images(conf: Path) -> None:
    path = conf / "datasets" / "customers.yaml"
    text = path.read_text().replace(
        "  num_processes: 2\n", "  num_processes: 2\n  augmentation: {max_degrees: 5}\n", 1
    )
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_dataset("customers", conf)
    assert "model.augmentation applies to image features only" in str(err.value)
