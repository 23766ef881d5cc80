"""The run the fault-injection tests of tests/reliability_test.py kill, preempt and corrupt.

Two tiny stages on the bundled digits (a teacher, then a two-seed KD student), checkpointed
every 5 steps and logged every step, so that every moment of a run is a few milliseconds
away from a checkpoint, an export or a stage boundary. The tests add
``--config.dataset.data_dir`` and ``--config.compilation_cache_dir``:

  python -m launch.train --config=tests/reliability_config.py --workdir=/tmp/kdjax_reliability
"""

from configs import base


def get_config():
  config = base.get_config()
  config.dataset.batch_size = 32
  config.dataset.eval_batch_size = 360
  config.num_seeds = 1
  config.eval_every_steps = 10
  config.log_every_steps = 1
  config.checkpoint_every_steps = 5
  config.progress_bar = False
  config.min_teacher_accuracy_over_chance = 0.0  # a 30-step teacher: plumbing, not teaching
  adam = base.optimizer(name="adam", learning_rate=3e-3, weight_decay=0.0, schedule="cosine")
  config.stages = base.stages()
  config.stages.teacher = base.stage("mlp_tiny", "scratch", num_steps=30, optimizer=adam)
  config.stages.kd = base.stage("mlp_tiny", "kd", ("teacher",), num_steps=30, num_seeds=2,
                                optimizer=adam)
  return config
