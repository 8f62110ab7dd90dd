"""Batch scoring with ONNX Runtime inside Spark."""

from lakestory.inference.score import predictions_table, score_dataset, score_frame, scored_tables

__all__ = ["predictions_table", "score_dataset", "score_frame", "scored_tables"]
