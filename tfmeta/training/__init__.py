from tfmeta.training.checkpoints import CheckpointDir, CheckpointError
from tfmeta.training.evaluation import evaluate, format_result, mean_confidence_interval
from tfmeta.training.files import read_json, write_json
from tfmeta.training.keras_model import MetaLearnerModel
from tfmeta.training.lock import WorkdirLockedError
from tfmeta.training.resume import check_resume, resume_differences
from tfmeta.training.run_state import RunState
from tfmeta.training.trainer import NonFiniteLossError, Trainer
from tfmeta.training.workdir import Workdir, read_config, restore_checkpoint

__all__ = [
    "CheckpointDir",
    "CheckpointError",
    "MetaLearnerModel",
    "NonFiniteLossError",
    "RunState",
    "Trainer",
    "Workdir",
    "WorkdirLockedError",
    "check_resume",
    "evaluate",
    "format_result",
    "mean_confidence_interval",
    "read_config",
    "read_json",
    "restore_checkpoint",
    "resume_differences",
    "write_json",
]
