r"""Trains the stages of a kdjax run: teachers, assistants and students.

  python -m launch.train --config=configs/quickstart.py --workdir=workdir/quickstart \
      [--config.stages.kd.num_steps=500 ...] [--distributed ...]

from a checkout's root; anywhere once kdjax is installed, as ``kdjax-train`` (or
``python -m kdjax.launch.train``) with a config of your own (``kdjax.config``).

Intentionally kept short: it parses flags, validates the config and calls the trainer.

Exit codes: 0 when every stage is complete; 1 with a one-line ``error: ...`` on bad input
or a numerical failure (docs/errors.md lists them; ``--verbosity=0`` also logs the
traceback); 128 + the signal's number (143 for SIGTERM, 130 for SIGINT) when a signal
stopped training after saving a checkpoint: the same command resumes it. A second Ctrl-C
stops at once (exit 130) without saving; the same command resumes from the last checkpoint.
"""

import re
import signal
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from kdjax import checkpoints, performance, trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a run config file (see configs/).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run; resumed if it exists.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "One process of a multi-host run: call jax.distributed.initialize() "
    "first. Every process runs the same command with the same --workdir on a shared "
    "filesystem; on TPU pods, SLURM and Open MPI the three flags below are found by JAX.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "With --distributed: the number of processes.",
                                      lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "With --distributed: this process's id, 0 to N - 1.",
                                   lower_bound=0)

# kdjax's own refusals: reported in one line, without a traceback.
_USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError,
                checkpoints.UnreadableCheckpointsError, trainer.StageBusyError)


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def _load_error(error: OSError) -> str:
  # config_flags defers a config file's loading error (an IOError) to the config's first use.
  return f"error: cannot load --config: {_one_line(error.__cause__ or error)}"


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with the errors of ``--config`` and its overrides in one line."""
  positional = [a for a in argv[1:] if re.fullmatch(r"[^-].*\.py(:.*)?", a)]  # config files
  if positional and not any(a.startswith(("--config=", "-config=")) or a in ("--config",
                                                                              "-config")
                            for a in argv[1:]):
    sys.exit(f"error: --config is required, and {positional[0]!r} was given as a positional "
             f"argument; write --config={positional[0]}.")
  try:
    return app.parse_flags_with_usage(argv)
  except OSError as error:  # an override of a config file that failed to load
    sys.exit(_load_error(error))
  except (AttributeError, KeyError) as error:  # an override of a field the config lacks
    while error.args and isinstance(error.args[0], BaseException):
      error = error.args[0]
    message = _one_line(error.args[0] if error.args else error)
    field = re.match(r"'([^']+)'", message)
    flag = next((a.split("=")[0] for a in argv if field and a.startswith("--config.")
                 and a.split("=")[0].endswith("." + field.group(1))), "--config override")
    sys.exit(f"error: {flag}: no such config field {message}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # the trainer reports progress itself
  config = _CONFIG.value
  try:
    config.lock()  # locked already (lock_config=True); a config that failed to load says why
  except OSError as error:
    sys.exit(_load_error(error))
  if not _DISTRIBUTED.value and any(f.present for f in (_COORDINATOR, _NUM_PROCESSES,
                                                         _PROCESS_ID)):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id need "
                         "--distributed.")
  # Virtual CPU devices and the compilation cache, before anything starts JAX's backends.
  num_processes = _NUM_PROCESSES.value if _DISTRIBUTED.value else 1
  logging.info("performance settings: %s", performance.configure_run(config, num_processes))
  if _DISTRIBUTED.value:
    try:
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except (ValueError, RuntimeError) as error:
      sys.exit(f"error: --distributed: {_one_line(error)} (JAX finds the processes on TPU "
               f"pods, SLURM and Open MPI; elsewhere pass --coordinator_address, "
               f"--num_processes and --process_id).")
  try:
    trainer.train_and_evaluate(config, _WORKDIR.value, input_workers_allowed=True)
  except trainer.Preempted as stopped:
    print(f"stopped: {stopped}", file=sys.stderr, flush=True)
    return 128 + stopped.signum
  except KeyboardInterrupt as stopped:  # a second Ctrl-C
    print(f"stopped: {stopped}", file=sys.stderr, flush=True)
    return 128 + signal.SIGINT
  except _USER_ERRORS as error:
    logging.info("the error's traceback:", exc_info=True)
    sys.exit(f"error: {error}")
  return 0


def run():
  """The ``kdjax-train`` entry point of an installed kdjax."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
