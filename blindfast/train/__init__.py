"""Training a flow-matching prior: the loop, the power-function EMA, checkpoints that resume exactly, and
data-parallel training under torchrun."""

from blindfast.train.checkpoint import (CheckpointError, load_training_state, load_weights, read_checkpoint,
                                        save_training_state, write_checkpoint)
from blindfast.train.data_sources import ImagePatches, TensorPatches
from blindfast.train.distributed import World
from blindfast.train.ema import DEFAULT_EMA_STDS, PowerEMA, power_ema_gammas
from blindfast.train.loop import TrainConfig, TrainResult, accumulate_gradients, learning_rate, sample_time, train_prior
from blindfast.train.steps import CHECKPOINT_NAME, LOG_COLUMNS, LOG_NAME

__all__ = [
    "train_prior", "TrainConfig", "TrainResult", "World", "accumulate_gradients", "learning_rate", "sample_time",
    "TensorPatches", "ImagePatches", "CHECKPOINT_NAME", "LOG_NAME", "LOG_COLUMNS",
    "PowerEMA", "power_ema_gammas", "DEFAULT_EMA_STDS",
    "CheckpointError", "write_checkpoint", "read_checkpoint", "save_training_state", "load_training_state",
    "load_weights",
]
