"""Training: data, the loop, checkpoints, distributed execution. Entry point: :func:`train` or ``lyra train``."""

from .config import TrainConfig
from .data import DataError, load_dataset
from .trainer import Trainer, write_run_config

__all__ = ["DataError", "TrainConfig", "Trainer", "load_dataset", "write_run_config"]
