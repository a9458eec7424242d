"""Labels from failure events, grouped training by machine, evaluation."""

from pitstop.training.labels import rul_labels
from pitstop.training.pipeline import RegisteredModel, train_and_register
from pitstop.training.train import TrainResult, train_rul_model

__all__ = ["RegisteredModel", "TrainResult", "rul_labels", "train_and_register", "train_rul_model"]
