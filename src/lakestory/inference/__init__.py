"""Batch scoring with ONNX Runtime inside Spark."""

from lakestory.inference.score import score_dataset, score_frame, scored_tables

__all__ = ["score_dataset", "score_frame", "scored_tables"]
