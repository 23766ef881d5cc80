r"""Trains the stages of a kdjax run: teachers, assistants and students.

  python -m launch.train --config=configs/quickstart.py --workdir=workdir/quickstart \
      [--config.stages.kd.num_steps=500 ...]

Intentionally kept short: it parses flags, validates the config and calls the trainer.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from kdjax import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a run config file (see configs/).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run; resumed if it exists.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # the trainer reports progress itself
  trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
