"""One of two JAX processes on loopback, for trainer_test's multi-process run.

Usage: python tests/multihost_trainer_worker.py PROCESS_ID PORT DATA_DIR WORKDIR OUTPUT_JSON

Both processes train the same two stages (a teacher, then a DKP student with cached teacher
logits: checkpoints, exports, the teacher cache over both processes' examples). Process 1
alone gets a SIGTERM after the student's first checkpoint: both must stop at the same step.
The same config then runs to the end (resuming the student), then once more after the
student stage is reopened (its result and last exports removed): it reuses the teacher and
restores the student's last checkpoint. Each process writes how it stopped and what the
last two ``train_and_evaluate`` calls returned to ``OUTPUT_JSON`` with its process id
appended.
"""

import glob
import json
import os
import shutil
import signal
import sys
import threading
import time

from absl import flags
import digits_runs
import jax

from configs import base
from kdjax import multihost, trainer

NUM_KD_STEPS = 100


def config(data_dir: str):
  """Global batch 32 (16 per process, 4 per device), evaluation batch 200 (50 per device)."""
  run = digits_runs.digits_config(
      data_dir, **{"dataset.eval_batch_size": 200, "num_seeds": 2, "eval_every_steps": 10,
                   "log_every_steps": 5, "checkpoint_every_steps": 10})
  run.stages.teacher = base.stage("mlp_tiny", "scratch", num_steps=20, num_seeds=1)
  run.stages.kd = base.stage("mlp_tiny", "dkp", ("teacher",), num_steps=NUM_KD_STEPS)
  return run


def _terminate_after_first_checkpoint(stage_directory: str) -> None:
  """Sends this process a SIGTERM once the stage's first checkpoint exists."""
  while not os.path.isdir(os.path.join(stage_directory, "checkpoints", "10")):
    time.sleep(0.005)
  os.kill(os.getpid(), signal.SIGTERM)


def main(process_id: int, port: int, data_dir: str, workdir: str, output: str) -> None:
  jax.config.update("jax_num_cpu_devices", 2)
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=process_id)
  flags.FLAGS.mark_as_parsed()
  if process_id == 1:  # the signal reaches one process only
    threading.Thread(target=_terminate_after_first_checkpoint, daemon=True,
                     args=(trainer.stage_dir(workdir, "kd"),)).start()
  try:
    trainer.train_and_evaluate(config(data_dir), workdir)
    stopped = "not stopped"
  except trainer.Preempted as error:
    stopped = str(error)
  first = trainer.train_and_evaluate(config(data_dir), workdir)
  if process_id == 0:  # as if stopped after the last checkpoint: the next run restores it
    kd = trainer.stage_dir(workdir, "kd")
    os.remove(os.path.join(kd, trainer.RESULT_FILE))
    for last in glob.glob(os.path.join(kd, "export", "seed*", "last")):
      shutil.rmtree(last)
  multihost.sync_processes("worker: kd stage reopened")
  again = trainer.train_and_evaluate(config(data_dir), workdir)
  with open(f"{output}{process_id}", "w") as f:
    json.dump({"stopped": stopped, "first": first, "again": again}, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6])
