"""Models, the train loop, distribution backends and tracking."""

from lakestory.training.model import Preprocess, WithProbability, build_model
from lakestory.training.train import TrainResult, majority_accuracy, train_model

__all__ = [
    "Preprocess",
    "TrainResult",
    "WithProbability",
    "build_model",
    "majority_accuracy",
    "train_model",
]
