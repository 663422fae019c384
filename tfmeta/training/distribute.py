"""tf.distribute strategies for the training binary.

A learner built under ``strategy.scope()`` splits each meta-batch across the
strategy's replicas (``tfmeta.core.executor.MetaStep``): every replica
adapts B / R tasks and the meta-gradients are all-reduced. Strategies:

- "default": one device.
- "mirrored": ``MirroredStrategy`` over the GPUs of this host, or, with
  ``cpu_replicas`` > 1 (set before TensorFlow starts), over that many logical
  CPU devices.
- "multi_worker": ``MultiWorkerMirroredStrategy`` over the hosts named in the
  ``TF_CONFIG`` environment variable (each worker runs the same command with
  its own ``task.index``). Every worker draws the same seeded meta-batches and
  runs its share of the tasks; only the chief writes to the run's folder, the
  other workers write their (identical) checkpoints to a scratch folder.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfmeta.training.workdir import Workdir

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str, cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """The strategy ``name``; call before any other TensorFlow work (logical
    devices cannot be configured once TensorFlow has started)."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if cpu_replicas < 0:
        raise ValueError(f"cpu_replicas must be >= 0, got {cpu_replicas}")
    if cpu_replicas > 1:
        if name != "mirrored":
            raise ValueError(
                "cpu_replicas splits this host's CPU for the 'mirrored' strategy only, "
                f"got {name!r}"
            )
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas
            )
        except RuntimeError as error:
            raise RuntimeError(
                "cpu_replicas must be set before TensorFlow initializes its devices"
            ) from error
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "the 'multi_worker' strategy needs the TF_CONFIG environment variable "
            '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}) on every worker'
        )
    try:
        json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (always, except for the
    non-chief workers of a multi-worker strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_workdir(workdir: str, strategy: tf.distribute.Strategy) -> str:
    """``workdir`` for the chief; a scratch folder under it for other workers.

    Each process trains its own workdir and holds its lock: the chief the
    run's, every other worker its scratch folder's.
    """
    if is_chief(strategy):
        return workdir
    resolver = strategy.cluster_resolver
    return Workdir(workdir).worker_path(resolver.task_type, resolver.task_id)
