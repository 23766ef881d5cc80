"""One of two JAX processes on loopback, for trainer_test's multi-process run.

Usage: python tests/multihost_trainer_worker.py PROCESS_ID PORT DATA_DIR WORKDIR OUTPUT_JSON

Both processes train the same two stages (a teacher, then a DKP student with cached teacher
logits: checkpoints, exports, the teacher cache over both processes' examples), then run the
same config again, which reuses the finished stages. Each writes what
``train_and_evaluate`` returned to ``OUTPUT_JSON`` with its process id appended.
"""

import json
import sys

from absl import flags
import digits_runs
import jax

from configs import base
from kdjax import trainer


def config(data_dir: str):
  """Global batch 32 (16 per process, 4 per device), evaluation batch 200 (50 per device)."""
  run = digits_runs.digits_config(
      data_dir, **{"dataset.eval_batch_size": 200, "num_seeds": 2, "eval_every_steps": 10,
                   "log_every_steps": 5, "checkpoint_every_steps": 10})
  run.stages.teacher = base.stage("mlp_tiny", "scratch", num_steps=20, num_seeds=1)
  run.stages.kd = base.stage("mlp_tiny", "dkp", ("teacher",), num_steps=20)
  return run


def main(process_id: int, port: int, data_dir: str, workdir: str, output: str) -> None:
  jax.config.update("jax_num_cpu_devices", 2)
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=process_id)
  flags.FLAGS.mark_as_parsed()
  first = trainer.train_and_evaluate(config(data_dir), workdir)
  again = trainer.train_and_evaluate(config(data_dir), workdir)
  with open(f"{output}{process_id}", "w") as f:
    json.dump({"first": first, "again": again}, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6])
