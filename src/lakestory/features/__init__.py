"""Splits, fitted transforms and the gold feature tables."""

from lakestory.features.build import (
    LABEL_COLUMN,
    PARAMS_VERSION_COLUMN,
    Params,
    build_features,
    feature_frame,
    feature_inputs,
    load_params,
    next_params_version,
    read_params,
)
from lakestory.features.images import ImageParams
from lakestory.features.split import SPLIT_COLUMN, split_bucket, with_split
from lakestory.features.transforms import (
    FEATURES_COLUMN,
    FeatureParams,
    Input,
    Projection,
    fit,
    prepared,
    with_feature_vector,
)

__all__ = [
    "FEATURES_COLUMN",
    "LABEL_COLUMN",
    "PARAMS_VERSION_COLUMN",
    "SPLIT_COLUMN",
    "FeatureParams",
    "ImageParams",
    "Input",
    "Params",
    "Projection",
    "build_features",
    "feature_inputs",
    "feature_frame",
    "fit",
    "load_params",
    "next_params_version",
    "prepared",
    "read_params",
    "split_bucket",
    "with_feature_vector",
    "with_split",
]
