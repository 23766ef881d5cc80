r"""Speed of kdjax's steps against the physical limit and against PyTorch, in one process.

  python -m launch.benchmark [--pairs=resnet56:resnet8,resnet110:resnet8] [--dgkd] \
      [--steps=20] [--warmup=3] [--torch] [--json=PATH]

For every teacher → student pair (and with ``--dgkd`` for DGKD's chain, teacher resnet26 and
assistants resnet20, resnet14 → student resnet8), on random CIFAR-shaped data at batch 128:

* (a) ``teacher``: the teacher forward in eval mode (``kdjax.step.make_teacher_forward``);
* (b) ``student``: the student train step with cross-entropy only (``make_train_step``);
  ``naive``: the same step written by hand with ``flax.linen`` and ``optax``, for scale;
* (c) ``kd``: kdjax's fused distillation step (teacher forward + student step, one program);
* (d) ``cached``: the step reading cached teacher logits from the batch (``teacher=None``);
* (e) ``sweep``: ``--num_students`` students sharing one teacher (``kdjax.sweep``), against
  that many fused steps;
* (f) ``pipeline``: the CIFAR-10 input pipeline alone (``kdjax.data.train_iterator``, crop +
  flip), on ``--data_dir`` (skipped with a message when the data is absent);

and with ``--torch`` the same models and the same KD step in PyTorch (``launch/
torch_reference.py``, CPU, 2 threads). The physical limit of a distillation step is
(a) + (b): a fused step can at best cost one teacher forward plus one student step.

Measurement. Steps are timed one at a time with ``block_until_ready``, after ``--warmup``
untimed calls (the first call, compilation included, is reported separately as
``compile_s``). Steps of one case are *interleaved*: each round runs every step once, so a
burst of load from elsewhere slows all of them alike and the ratios stay meaningful on a
shared machine. Each round also records the CPU time that other processes took meanwhile
(``/proc/stat`` minus this process); rounds where it exceeds ``--max_foreign_load`` of the
machine are discarded and replaced, up to ``--max_rounds`` rounds per case, and the table
flags a case whose clean rounds ran out. The table shows medians; the JSON holds every
figure (median, quartiles, min, max, every round's times and foreign load).

This file parses the flags and prints; the harness is ``kdjax.benchmark`` (timing, the
timed steps, the end-to-end run and the table), the PyTorch steps
``launch/torch_reference.py``.
"""

from collections.abc import Sequence
import datetime
import json
import os
import platform
import sys

from absl import app, flags, logging
import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

from kdjax import benchmark, dispatch, performance

_PAIRS = flags.DEFINE_list("pairs", ["resnet56:resnet8", "resnet110:resnet8"],
                           "teacher:student pairs of kdjax.models names.")
_DGKD = flags.DEFINE_bool("dgkd", False, "Also time DGKD's chain resnet26, resnet20, resnet14 "
                          "→ resnet8 with the 'dgkd' objective term.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed rounds per case (each round runs every step).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed rounds after the first (compiling) call.")
_TORCH = flags.DEFINE_bool("torch", False, "Also time the PyTorch reference (needs torch).")
_JSON = flags.DEFINE_string("json", None, "Write every figure to this JSON file.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Examples per step.")
_NUM_STUDENTS = flags.DEFINE_integer("num_students", 4, "Students of the vmapped sweep (e).")
_MEASURE = flags.DEFINE_list(
    "measure", ["teacher", "student", "naive", "kd", "cached", "sweep", "pipeline"],
    "Which steps to time: teacher, student, naive, kd, cached, sweep, pipeline; also "
    "sweep_vmap (the sweep with vectorize=True, slow on CPU) and student_1dev (the student "
    "step on one device, added automatically when the steps run on several).")
_TEACHER_DTYPE = flags.DEFINE_enum("teacher_dtype", "float32", ["float32", "bfloat16"],
                                   "Computation dtype of the teachers in (a), (c) and (e).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory of CIFAR-10 for (f); default "
    "<repo>/../shared/data/tensorflow_datasets.")
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", 60,
                                         "Batches the input pipeline (f) is timed over.")
_PERFORMANCE_DEFAULTS = flags.DEFINE_bool(
    "performance_defaults", True, "Apply kdjax.performance.configure() at startup, as the "
    "trainer does (--noperformance_defaults: plain JAX defaults).")
_DEVICES = flags.DEFINE_integer(
    "devices", None, "Number of (virtual) CPU devices to split the batch over with "
    "kdjax.parallel.mesh_step; default: kdjax.performance's choice (or 1 with "
    "--noperformance_defaults).")
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None, "JAX persistent compilation cache directory (to time a "
    "second process's compile); default: none.")
_MAX_FOREIGN_LOAD = flags.DEFINE_float(
    "max_foreign_load", 0.15, "Discard a round when other processes used more than this "
    "fraction of the machine's CPU time during it.")
_MAX_ROUNDS = flags.DEFINE_integer("max_rounds", 0, "Most rounds per case when replacing "
                                   "noisy ones (0: 3 × --steps).")
_END_TO_END_STEPS = flags.DEFINE_integer(
    "end_to_end_steps", 0, "Also time this many fused KD steps of the first pair fed by the "
    "real CIFAR-10 pipeline, as the trainer runs them (-1: one epoch; 0: skip).")
_PIPELINE_WORKERS = flags.DEFINE_integer(
    "pipeline_workers", 0, "worker_count of the input pipeline in the end-to-end run.")
_END_TO_END_DISPATCH_DEPTH = flags.DEFINE_integer(
    "end_to_end_dispatch_depth", dispatch.DEFAULT_DEPTH, "Most steps in flight in the "
    "end-to-end run (kdjax.dispatch; below 32 with several CPU devices).")



def _versions(with_torch: bool) -> dict[str, str]:
  versions = {"python": platform.python_version(), "jax": jax.__version__,
              "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__}
  if with_torch:
    import torch  # pylint: disable=g-import-not-at-top
    versions["torch"] = torch.__version__
  return versions


def _cases() -> list[benchmark.Case]:
  cases = []
  for pair in _PAIRS.value:
    teacher, sep, student = pair.partition(":")
    if not sep or not teacher or not student:
      raise app.UsageError(f"--pairs entry {pair!r} must be teacher:student, e.g. "
                           f"resnet56:resnet8.")
    cases.append(benchmark.Case(f"{teacher} -> {student}", (teacher,), student, "kd"))
  if _DGKD.value:
    cases.append(benchmark.Case("dgkd resnet26+20+14 -> resnet8",
                                ("resnet26", "resnet20", "resnet14"), "resnet8", "dgkd"))
  return cases


def _configure() -> dict:
  """kdjax's performance settings (or plain JAX's), applied before JAX starts."""
  if _PERFORMANCE_DEFAULTS.value or _DEVICES.value:
    return performance.configure(batch_sizes=(_BATCH_SIZE.value,),
                                 num_cpu_devices=_DEVICES.value,
                                 compilation_cache_dir=_COMPILATION_CACHE_DIR.value or "")
  return {"num_cpu_devices": 1, "source": "--noperformance_defaults",
          "compilation_cache_dir": performance.enable_compilation_cache(
              _COMPILATION_CACHE_DIR.value or "")}


def _torch_available() -> bool:
  """Whether --torch can run: PyTorch installed (then limited to 2 threads)."""
  if not _TORCH.value:
    return False
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("--torch: PyTorch is not installed (pip install torch==2.13.0); skipping it.")
    return False
  torch.set_num_threads(2)
  return True


def _time_case(case: benchmark.Case, measure: list[str], use_torch: bool, teacher_dtype,
               pipeline: dict | None) -> dict | None:
  """Times one case's steps interleaved; its entry of the results, or None if none ran."""
  batch_size, num_students = _BATCH_SIZE.value, _NUM_STUDENTS.value
  steps = benchmark.jax_steps(case, measure, batch_size=batch_size, num_students=num_students,
                              teacher_dtype=teacher_dtype)
  if use_torch:
    from launch import torch_reference  # pylint: disable=g-import-not-at-top
    steps.update(torch_reference.benchmark_steps(case.teachers, case.student, measure,
                                                 batch_size=batch_size))
  if not steps:
    return None
  timings, info = benchmark.time_interleaved(
      steps, rounds=_STEPS.value, warmup=_WARMUP.value,
      max_foreign_load=_MAX_FOREIGN_LOAD.value, max_rounds=_MAX_ROUNDS.value or 3 * _STEPS.value)
  summaries = {name: t.summary() for name, t in timings.items()}
  medians = {name: s["median_ms"] for name, s in summaries.items()}
  return {
      "teachers": list(case.teachers), "student": case.student, "term": case.term,
      "steps": summaries,
      "times_ms": {name: [x * benchmark.timing.MS for x in t.times]
                   for name, t in timings.items()},
      "ratios": benchmark.case_ratios(medians, num_students,
                                      pipeline["images_per_s"] if pipeline else None,
                                      batch_size),
      "compile_s": info["first_call_s"],
      "foreign_load": info["foreign_load"],
      "median_foreign_load": float(np.median(info["foreign_load"])),
      "rounds_run": info["rounds_run"],
      "rounds_kept": len(next(iter(timings.values())).times),
      "clean": info["clean"],
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  applied = _configure()
  measure = [m.strip() for m in _MEASURE.value]
  unknown = sorted(set(measure) - {*benchmark.STEP_NAMES, "pipeline"})
  if unknown:
    raise app.UsageError(f"--measure names unknown steps {unknown}; valid: "
                         f"{', '.join([*benchmark.STEP_NAMES, 'pipeline'])}.")
  use_torch = _torch_available()
  teacher_dtype = jnp.bfloat16 if _TEACHER_DTYPE.value == "bfloat16" else None
  results = {
      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "machine": benchmark.machine(),
      "versions": _versions(use_torch),
      "command": " ".join([os.path.basename(sys.executable), "-m", "launch.benchmark",
                           *sys.argv[1:]]),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "performance": applied,
      "devices": [str(d) for d in jax.devices()],
      "settings": {"batch_size": _BATCH_SIZE.value, "num_students": _NUM_STUDENTS.value,
                   "steps": _STEPS.value, "warmup": _WARMUP.value,
                   "teacher_dtype": _TEACHER_DTYPE.value, "measure": measure,
                   "max_foreign_load": _MAX_FOREIGN_LOAD.value},
      "cases": {},
  }
  data_dir = os.path.normpath(_DATA_DIR.value or os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir, "shared",
      "data", "tensorflow_datasets"))
  pipeline = None
  if "pipeline" in measure:
    try:
      pipeline = benchmark.time_pipeline(data_dir, batch_size=_BATCH_SIZE.value,
                                         num_batches=_PIPELINE_BATCHES.value,
                                         warmup=_WARMUP.value)
    except FileNotFoundError as error:
      print(f"(f) input pipeline skipped: CIFAR-10 is not in {data_dir} ({error}).")
    results["pipeline"] = pipeline
  for case in _cases():
    logging.info("building %s", case.name)
    entry = _time_case(case, measure, use_torch, teacher_dtype, pipeline)
    if entry is not None:
      results["cases"][case.name] = entry
  if _END_TO_END_STEPS.value:
    try:
      results["end_to_end"] = benchmark.time_end_to_end(
          _cases()[0], data_dir, batch_size=_BATCH_SIZE.value, steps=_END_TO_END_STEPS.value,
          workers=_PIPELINE_WORKERS.value, teacher_dtype=teacher_dtype,
          dispatch_depth=_END_TO_END_DISPATCH_DEPTH.value)
    except FileNotFoundError as error:
      print(f"end-to-end run skipped: CIFAR-10 is not in {data_dir} ({error}).")
      results["end_to_end"] = None
  print(f"kdjax benchmark, {results['date']}, {results['machine']}")
  print("versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()))
  print(f"devices: {len(results['devices'])} ({jax.default_backend()}); performance "
        f"settings: {applied}; XLA_FLAGS={results['xla_flags']!r}")
  print(benchmark.format_table(results))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=1)
    print(f"wrote {_JSON.value}")


if __name__ == "__main__":
  app.run(main)
