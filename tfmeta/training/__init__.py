from tfmeta.training.evaluation import evaluate, format_result, mean_confidence_interval
from tfmeta.training.trainer import NonFiniteLossError, Trainer
from tfmeta.training.workdir import (
    check_resume,
    prepare_workdir,
    read_config,
    write_json,
)

__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "check_resume",
    "evaluate",
    "format_result",
    "mean_confidence_interval",
    "prepare_workdir",
    "read_config",
    "write_json",
]
