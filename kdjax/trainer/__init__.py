"""The training layer: stages of a run, checkpoints, evaluation, logs and the final summary.

This is the one impure layer of kdjax: it reads data, writes files and talks to the
terminal; the mathematics lives in the pure step builders it calls. A run is a sequence of
stages (``config.stages``); stage ``NAME`` lives in ``WORKDIR/stages/NAME``:

* ``stage_config.json`` — the stage's config, the run settings it depends on and the
  parameter hashes of the networks it reads (teachers, ``init_from``); a later run with a
  different one (a changed config, a retrained or replaced teacher) is refused instead of
  mixing results;
* ``checkpoints/`` — orbax checkpoints of the train state and the input iterator, from
  which an interrupted stage resumes exactly where it stopped;
* ``export/seed<i>/best`` and ``export/seed<i>/last`` — each student's network with a
  provenance record; later stages load seed 0's best as a teacher, and seed i's best as the
  initialization of their own seed i (``init_from``);
* ``lock`` — held by the run training the stage (released when it exits, however it
  exits); another run reaching the stage meanwhile is refused with the holder's name;
* ``metrics.jsonl`` and TensorBoard events; ``result.json`` once the stage is complete — a
  complete stage is reused, not retrained. Besides accuracies and curves it records the
  protocol (dataset with its class and train-example counts, batch size, augmentation,
  epochs) and the cost: wall seconds of setup (teacher checks and logit cache), training,
  evaluation, and checkpoint saves with network exports, summed over the stage's runs, and
  the hardware (backend, device kind and count, host CPU count) of each.

At the end, ``WORKDIR/summary.md`` and ``WORKDIR/accuracy.png`` compare every finished stage
of the workdir (those of other configs run in it too).

One job per module: ``run_config`` (``validate``, which also resolves lengths given in
epochs into steps), ``workdir`` (paths, the versioned stage record, atomic JSON, metrics
rewind), ``preemption`` (signals, the stop agreed between processes), ``context`` (what the
stages of a run share), ``stage`` (``build_stage``: a stage built into a value), ``cost``
(a stage's wall seconds by what they were spent on) and ``loop`` (``train_stage``,
``train_and_evaluate``).

Reliability. A run killed at any moment (``kill -9``, a lost machine) and started again with
the same command ends with the parameters, curves and exports of an uninterrupted run, bit
for bit: the stage resumes from its last checkpoint (train state, input iterator state and
the progress record together), ``metrics.jsonl`` is cut back to that step, every file that
marks completion (``stage_config.json``, ``result.json``, exports' ``provenance.json``) is
written atomically and after what it describes, and exports are redone by the resumed run.
SIGTERM and SIGINT (preemption, Ctrl-C) stop training between two steps, save a checkpoint at
the current step and raise ``Preempted`` (the first signal is acknowledged on stderr at
once); a second Ctrl-C aborts at once, leaving nothing half-written. A latest
checkpoint that cannot be read is reported and set aside, and the stage resumes from the
previous one. Non-finite values (in teacher outputs, losses or gradients) are detected at
every step on the device and stop training (``config.nonfinite = "stop"``) before any
checkpoint or export records the bad state, or are skipped (``"skip"``) and counted.
"""

from kdjax.trainer.loop import train_and_evaluate, train_stage
from kdjax.trainer.preemption import Preempted
from kdjax.trainer.progress import Progress
from kdjax.trainer.run_config import NONFINITE_MODES, steps_per_epoch, validate
from kdjax.trainer.stage import Stage, build_stage
from kdjax.trainer.workdir import (
    METRICS_FILE,
    RESULT_FILE,
    STAGE_CONFIG_FILE,
    StageBusyError,
    export_dir,
    stage_dir,
)

__all__ = [
    "METRICS_FILE",
    "NONFINITE_MODES",
    "RESULT_FILE",
    "STAGE_CONFIG_FILE",
    "Preempted",
    "Progress",
    "Stage",
    "StageBusyError",
    "build_stage",
    "export_dir",
    "stage_dir",
    "steps_per_epoch",
    "train_and_evaluate",
    "train_stage",
    "validate",
]
