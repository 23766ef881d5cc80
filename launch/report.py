r"""Writes docs/results.md and its plots from the workdirs of the results configs.

  python -m launch.report \
      --table=configs/results_cifar10_teacher.py=docs/results/runs/cifar10_teacher \
      [--table=CONFIG_FILE[:ARG]=WORKDIR[,WORKDIR...] ...] [--output_dir=docs]

Each ``--table`` names a config file (with ``launch.train``'s optional ``:ARG``) whose
``get_report`` gives a table, and the workdirs where that config ran (seeds pooled over
them). Intentionally kept short: the report is ``kdjax.report``'s. The same workdirs give the
same files, byte for byte.
"""

import shlex
import sys

from absl import app, flags

from kdjax import report

_TABLES = flags.DEFINE_multi_string(
    "table", None, "CONFIG_FILE[:ARG]=WORKDIR[,WORKDIR...]: a table and its runs; repeat "
    "for several tables.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "docs", "Where results.md and plots go.")
flags.mark_flags_as_required(["table"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  tables = []
  try:
    for value in _TABLES.value:
      config_file, separator, workdirs = value.partition("=")
      if not separator or not workdirs:
        raise ValueError(f"--table={value!r} must be CONFIG_FILE[:ARG]=WORKDIR[,WORKDIR...]")
      tables.append(report.load_table(config_file, workdirs.split(",")))
    command = " ".join(["python -m launch.report",
                        *(f"--table={shlex.quote(t)}" for t in _TABLES.value),
                        *([f"--output_dir={shlex.quote(_OUTPUT_DIR.value)}"]
                          if _OUTPUT_DIR.present else [])])
    for path in report.write(tables, _OUTPUT_DIR.value, command):
      print(path)
  except (ValueError, FileNotFoundError) as error:
    sys.exit(f"error: {error}")
  return 0


if __name__ == "__main__":
  app.run(main)
