"""Training: one trainer per task family on one shared, resumable loop, and evaluation.

A plain library: whoever runs it supplies a `TrainingContext`; nothing here touches the
database, HTTP or the job queue — except `jobs` (training as a job of the queue: checking a
request, and the `train` job that runs the library and registers the model version) and
`job_context` (the `TrainingContext` of that job: its events and its checkpoint folder).
"""

from openmaas.training.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes
from openmaas.training.config import config_from_params, hyperparameters
from openmaas.training.context import DirectoryContext, InMemoryContext, TrainingContext
from openmaas.training.loop import LoopResult, LoopSettings, TrainingStopped, train_loop
from openmaas.training.predictor import (
    ClassPrediction,
    Prediction,
    Predictor,
    Recommendations,
    ValuePrediction,
)
from openmaas.training.result import TrainedModel
from openmaas.training.train import train

__all__ = [
    "ClassPrediction",
    "DirectoryContext",
    "InMemoryContext",
    "LoopResult",
    "LoopSettings",
    "Prediction",
    "Predictor",
    "Recommendations",
    "TrainedModel",
    "TrainingContext",
    "TrainingStopped",
    "ValuePrediction",
    "checkpoint_from_bytes",
    "checkpoint_to_bytes",
    "config_from_params",
    "hyperparameters",
    "train",
    "train_loop",
]
