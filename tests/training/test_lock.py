"""One run per workdir: a second trainer refuses; a crashed holder leaves no lock."""

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.training.runs import make_trainer, snapshot
from tfmeta.training import Workdir, WorkdirLockedError
from tfmeta.training.distribute import worker_workdir

# Holds the lock of argv[1] until killed; lock.py needs no TensorFlow.
_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[2])
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
held = lock.FileLock(sys.argv[1])
held.acquire()
held.announce()
print("held", flush=True)
time.sleep(600)
"""


def hold_in_another_process(path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, path, str(REPO / "tfmeta/training/lock.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_trainer_on_a_locked_workdir_refuses_and_writes_nothing(tmp_path):
    first = Workdir(str(tmp_path))
    with first.locked():
        first.announce_holder()
        before = snapshot(tmp_path)
        trainer = make_trainer(tmp_path)
        with pytest.raises(WorkdirLockedError) as error:
            trainer.train(2)
        assert f"pid {os.getpid()} on " in str(error.value)
        assert snapshot(tmp_path) == before
        assert not (tmp_path / "checkpoints").exists()
        with first.locked():  # nested on the same object: still held
            pass
        assert first.lock_held
    assert not first.lock_held
    make_trainer(tmp_path).train(2)  # released: the next run trains
    assert Workdir(str(tmp_path)).latest.steps() == [2]


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path):
    holder = hold_in_another_process(str(tmp_path / "lock"))
    try:
        locked = pytest.raises(WorkdirLockedError, match=f"pid {holder.pid} on")
        with locked, Workdir(str(tmp_path)).locked():
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with Workdir(str(tmp_path)).locked() as workdir:
        assert workdir.lock_held


def test_multi_worker_chief_and_workers_lock_their_own_folders(tmp_path):
    class Resolver:
        def __init__(self, task_type, task_id):
            self.task_type, self.task_id = task_type, task_id

        def cluster_spec(self):
            class Spec:
                def as_dict(self):
                    return {"worker": ["a:1", "b:1"]}

            return Spec()

    class Strategy:
        def __init__(self, index):
            self.cluster_resolver = Resolver("worker", index)

    chief = Workdir(worker_workdir(str(tmp_path), Strategy(0)))
    worker = Workdir(worker_workdir(str(tmp_path), Strategy(1)))
    assert chief.path == str(tmp_path)
    assert worker.path == str(tmp_path / "workers" / "worker_1")
    with chief.locked(), worker.locked():
        for path in (chief.path, worker.path):
            with pytest.raises(WorkdirLockedError), Workdir(path).locked():
                pass
