"""Splits, fitted transforms and the gold feature tables."""

from lakestory.features.build import (
    FEATURES_COLUMN,
    LABEL_COLUMN,
    SPLIT_COLUMN,
    ScalerParams,
    build_features,
    feature_frame,
    features_table,
    fit_standard_scaler,
    params_table,
    read_params,
    with_feature_vector,
    with_split,
)

__all__ = [
    "FEATURES_COLUMN",
    "LABEL_COLUMN",
    "SPLIT_COLUMN",
    "ScalerParams",
    "build_features",
    "feature_frame",
    "features_table",
    "fit_standard_scaler",
    "params_table",
    "read_params",
    "with_feature_vector",
    "with_split",
]
