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
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from typing import Any

from absl import app, flags, logging

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

_MS = 1e3
_STEP_NAMES = {
    "teacher": "(a) teacher forward (eval)",
    "student": "(b) student train step (CE)",
    "student_1dev": "    (b) on 1 device (plain jax.jit)",
    "naive": "    hand-written flax+optax step (CE)",
    "kd": "(c) fused KD step",
    "cached": "(d) KD step, cached teacher logits",
    "sweep": "(e) {n} students, one teacher (sweep)",
    "sweep_vmap": "    (e) with vectorize=True (jax.vmap)",
}


# ---------------------------------------------------------------------------------------------
# Timing.


def _cpu_jiffies() -> tuple[float, float] | None:
  """(busy, total) CPU seconds of the whole machine since boot, or None off Linux."""
  try:
    with open("/proc/stat") as f:
      fields = [float(v) for v in f.readline().split()[1:]]
  except OSError:
    return None
  hz = os.sysconf("SC_CLK_TCK")
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
  return (sum(fields) - idle) / hz, sum(fields) / hz


def _own_cpu() -> float:
  times = os.times()
  return times.user + times.system


class _LoadMeter:
  """The fraction of the machine's CPU time that other processes used over an interval."""

  def __init__(self):
    self._start = (_cpu_jiffies(), _own_cpu())

  def foreign(self) -> float:
    (start, own_start), end = self._start, _cpu_jiffies()
    if start is None or end is None or end[1] <= start[1]:
      return 0.0
    busy = end[0] - start[0]
    own = _own_cpu() - own_start
    return max(0.0, (busy - own) / (end[1] - start[1]))


@dataclasses.dataclass
class Timing:
  """Per-round times (seconds) of one step."""

  times: list[float]

  def summary(self) -> dict[str, float]:
    import numpy as np  # pylint: disable=g-import-not-at-top
    t = np.asarray(self.times) * _MS
    if not t.size:
      return {}
    q25, median, q75 = np.percentile(t, [25, 50, 75])
    return {"median_ms": float(median), "q25_ms": float(q25), "q75_ms": float(q75),
            "min_ms": float(t.min()), "max_ms": float(t.max()), "rounds": int(t.size)}


def _block(x: Any) -> Any:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.block_until_ready(x)


def time_interleaved(steps: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int,
                     max_foreign_load: float, max_rounds: int
                     ) -> tuple[dict[str, Timing], dict[str, Any]]:
  """Times ``steps`` in rounds (each round calls each step once), after first calls.

  Args:
    steps: name → a call that runs one step (its outputs are blocked on).
    rounds: the clean rounds wanted.
    warmup: untimed rounds after the first calls.
    max_foreign_load: a round during which other processes used more than this fraction of
      the machine's CPU is discarded.
    max_rounds: stop after this many rounds, clean or not.

  Returns:
    ``(timings, info)``: the clean rounds' times per step (every round's if fewer than
    half were clean) and ``{"first_call_s": {...}, "foreign_load": [...], "clean": bool}``.
  """
  first = {}
  for name, fn in steps.items():
    start = time.perf_counter()
    _block(fn())
    first[name] = time.perf_counter() - start
  for _ in range(warmup):
    for fn in steps.values():
      _block(fn())
  all_times = {name: [] for name in steps}
  loads = []
  while sum(load <= max_foreign_load for load in loads) < rounds and len(loads) < max_rounds:
    meter = _LoadMeter()
    for name, fn in steps.items():
      start = time.perf_counter()
      _block(fn())
      all_times[name].append(time.perf_counter() - start)
    loads.append(meter.foreign())
  keep = [load <= max_foreign_load for load in loads]
  clean = sum(keep) >= max(1, rounds // 2)
  if not clean:
    keep = [True] * len(loads)
  timings = {name: Timing([t for t, k in zip(ts, keep, strict=True) if k])
             for name, ts in all_times.items()}
  return timings, {"first_call_s": first, "foreign_load": loads, "clean": clean,
                   "rounds_run": len(loads)}


# ---------------------------------------------------------------------------------------------
# The JAX side.


@dataclasses.dataclass(frozen=True)
class Case:
  """A distillation setting: teacher (and assistants) → student."""

  name: str
  teachers: tuple[str, ...]
  student: str
  term: str  # "kd" or "dgkd"


def _objectives(term: str):
  from kdjax import objective  # pylint: disable=g-import-not-at-top
  ce = objective.Objective((objective.term("ce"),))
  if term == "dgkd":
    kd = objective.Objective((objective.term("ce", 0.1),
                              objective.term("dgkd", 0.9, temperature=4.0)))
  else:
    kd = objective.Objective((objective.term("ce", 0.1),
                              objective.term("kd", 0.9, temperature=4.0)))
  return ce, kd


class _Stateful:
  """A jitted step and the state it threads through calls (donated each call)."""

  def __init__(self, fn, state, teacher_vars, batch):
    self.fn, self.state, self.teacher_vars, self.batch = fn, state, teacher_vars, batch

  def __call__(self):
    self.state, metrics = self.fn(self.state, self.teacher_vars, self.batch)
    return self.state, metrics


def jax_steps(case: Case, measure: Sequence[str], *, batch_size: int, num_students: int,
              teacher_dtype) -> dict[str, Callable[[], Any]]:
  """Builds the jitted JAX steps of ``case`` on random CIFAR-10-shaped data.

  With several devices the steps run under ``kdjax.parallel.mesh_step`` (batch sharded,
  state and teachers replicated), as the trainer runs them.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from kdjax import models, parallel, sweep  # pylint: disable=g-import-not-at-top,g-multiple-import
  from kdjax import state as state_lib
  from kdjax import step as step_lib

  num_classes = 10
  key = jax.random.key(0)
  images = jax.random.normal(jax.random.fold_in(key, 0), (batch_size, 32, 32, 3), jnp.float32)
  labels = jax.random.randint(jax.random.fold_in(key, 1), (batch_size,), 0, num_classes)
  sample = images[:1]
  student = models.get(case.student, num_classes)
  teachers = tuple(models.get(t, num_classes) for t in case.teachers)
  teacher_arg = teachers[0] if len(teachers) == 1 else teachers
  teacher_vars = tuple(t.init(jax.random.fold_in(key, 10 + i), sample, train=False)
                       for i, t in enumerate(teachers))
  teacher_vars = teacher_vars[0] if len(teachers) == 1 else teacher_vars
  student_vars = [student.init(jax.random.fold_in(key, 100 + i), sample, train=False)
                  for i in range(num_students)]
  optimizer = optax.sgd(0.1, momentum=0.9)
  ce, kd = _objectives(case.term)

  mesh = parallel.data_mesh() if jax.device_count() > 1 else None
  batch = {"image": images, "label": labels}
  forward = step_lib.make_teacher_forward(teacher_arg, dtype=teacher_dtype)
  if mesh is None:
    place, place_batch = (lambda tree: tree), (lambda b: b)
    compile_step = lambda fn: jax.jit(fn, donate_argnums=0)  # noqa: E731
    jit_forward = jax.jit(forward)
  else:
    place = lambda tree: parallel.replicate(tree, mesh)  # noqa: E731
    place_batch = lambda b: parallel.shard_batch(jax.device_get(b), mesh)  # noqa: E731
    compile_step = lambda fn: parallel.mesh_step(fn, mesh)  # noqa: E731
    jit_forward = parallel.mesh_step(lambda _, tv, b: forward(tv, b), mesh, donate_state=False)
  teacher_vars = place(teacher_vars)
  device_batch = place_batch(batch)

  def new_state(i=0):
    return place(state_lib.create_train_state(student, student_vars[i], optimizer,
                                              jax.random.fold_in(key, 200 + i)))

  steps = {}
  if "teacher" in measure:
    if mesh is None:
      steps["teacher"] = lambda: jit_forward(teacher_vars, device_batch)
    else:
      steps["teacher"] = lambda: jit_forward(None, teacher_vars, device_batch)
  if "student" in measure:
    steps["student"] = _Stateful(compile_step(step_lib.make_train_step(student, ce, optimizer)),
                                 new_state(), None, device_batch)
  if mesh is not None and "student" in measure:
    # What one device gets without kdjax's settings: XLA's default scheduler (kdjax sets the
    # memory-optimised one only when it splits batches, for the whole process).
    default_scheduler = ({"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_DEFAULT"}
                         if jax.default_backend() == "cpu" else None)
    single = jax.jit(step_lib.make_train_step(student, ce, optimizer), donate_argnums=0,
                     compiler_options=default_scheduler)
    steps["student_1dev"] = _Stateful(single, state_lib.create_train_state(
        student, student_vars[0], optimizer, jax.random.fold_in(key, 200)), None, batch)
  if "naive" in measure:
    steps["naive"] = _naive_step(student, student_vars[0], optimizer, place, device_batch,
                                 compile_step)
  if "kd" in measure:
    steps["kd"] = _Stateful(compile_step(step_lib.make_train_step(
        student, kd, optimizer, teacher=teacher_arg, teacher_dtype=teacher_dtype)),
                            new_state(), teacher_vars, device_batch)
  if "cached" in measure:
    logits = jax.jit(step_lib.make_teacher_forward(teacher_arg))(
        jax.device_get(teacher_vars), batch)["logits"]
    cached = jnp.moveaxis(logits, 0, 1) if len(teachers) > 1 else logits[0]
    steps["cached"] = _Stateful(compile_step(step_lib.make_train_step(student, kd, optimizer)),
                                new_state(), None,
                                place_batch({**batch, "teacher_logits": cached}))
  for name, vectorize in (("sweep", None), ("sweep_vmap", True)):
    if name in measure:
      states = sweep.stack_states([jax.device_get(new_state(i)) for i in range(num_students)])
      steps[name] = _Stateful(compile_step(sweep.make_sweep_train_step(
          student, kd, optimizer, teacher=teacher_arg, teacher_dtype=teacher_dtype,
          vectorize=vectorize)), place(states), teacher_vars, device_batch)
  return steps


def _naive_step(student, variables, optimizer, place, batch, compile_step):
  """The CE train step as a user would write it with flax.linen and optax alone."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  def train_step(state, _, batch):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      logits, updates = student.apply({"params": params, "batch_stats": batch_stats},
                                      batch["image"], train=True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
      return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), {"loss": loss}

  params = jax.tree.map(lambda x: x.copy(), variables["params"])
  state = (params, jax.tree.map(lambda x: x.copy(), variables["batch_stats"]),
           optimizer.init(params))
  return _Stateful(compile_step(train_step), place(state), None, batch)


# ---------------------------------------------------------------------------------------------
# The PyTorch side.


def torch_steps(case: Case, measure: Sequence[str], *, batch_size: int
                ) -> dict[str, Callable[[], Any]]:
  """The PyTorch reference's steps of ``case``, named ``torch_<step>``."""
  import torch  # pylint: disable=g-import-not-at-top

  from launch import torch_reference as ref  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  images = torch.randn(batch_size, 3, 32, 32)
  labels = torch.randint(0, 10, (batch_size,))
  teachers = [ref.get(t).eval() for t in case.teachers]

  def forward():
    with torch.no_grad():
      return [t(images) for t in teachers]

  steps = {}
  if "teacher" in measure:
    steps["torch_teacher"] = forward
  if "student" in measure:
    student_step = ref.make_kd_step(ref.get(case.student), [])
    steps["torch_student"] = lambda: student_step(images, labels)
  if "kd" in measure:
    kd_step = ref.make_kd_step(ref.get(case.student), teachers)
    steps["torch_kd"] = lambda: kd_step(images, labels)
  if "cached" in measure:
    cached_logits = forward()
    cached_step = ref.make_cached_kd_step(ref.get(case.student))
    steps["torch_cached"] = lambda: cached_step(images, labels, cached_logits)
  return steps


# ---------------------------------------------------------------------------------------------
# The input pipeline.


def time_pipeline(data_dir: str, *, batch_size: int, num_batches: int,
                  warmup: int) -> dict[str, Any] | None:
  """Times ``kdjax.data.train_iterator`` on CIFAR-10 with crop + flip; None without data."""
  from kdjax import data  # pylint: disable=g-import-not-at-top
  try:
    iterator = data.train_iterator("cifar10", data_dir=data_dir, batch_size=batch_size, seed=0,
                                   augmentation="crop_flip")
  except FileNotFoundError as error:
    print(f"(f) input pipeline skipped: CIFAR-10 is not in {data_dir} ({error}).")
    return None
  prefetch = 4  # train_iterator's default prefetch_batches
  for _ in range(warmup + prefetch):
    next(iterator)
  meter = _LoadMeter()
  times = []
  start = time.perf_counter()
  for _ in range(num_batches):
    t = time.perf_counter()
    batch = next(iterator)
    times.append(time.perf_counter() - t)
  total = time.perf_counter() - start
  if batch["image"].shape != (batch_size, 32, 32, 3):
    raise ValueError(f"the pipeline gave images of shape {batch['image'].shape}.")
  return {"images_per_s": num_batches * batch_size / total, "batches": num_batches,
          "per_batch": Timing(times).summary(), "foreign_load": meter.foreign()}


def time_end_to_end(case: Case, data_dir: str, *, batch_size: int, steps: int, workers: int,
                    teacher_dtype) -> dict[str, Any] | None:
  """Times fused KD steps fed by the real CIFAR-10 pipeline, as the trainer runs them.

  The step is the trainer's composition of the step layer: ``kdjax.sweep``'s step for one
  stacked student, guarded by ``kdjax.finite_guard.guard``. Batches come from
  ``kdjax.data.train_iterator`` (crop + flip) and are placed on the device(s) every step;
  metrics are fetched every 50 steps (the trainer's logging); the clock runs from after
  the first (compiling) step to the last step's completion. Returns None (with a message)
  when CIFAR-10 is absent.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from kdjax import data, finite_guard, models, parallel, sweep  # pylint: disable=g-import-not-at-top,g-multiple-import
  from kdjax import state as state_lib
  try:
    info = data.dataset_info("cifar10", data_dir=data_dir)
    iterator = data.train_iterator("cifar10", data_dir=data_dir, batch_size=batch_size, seed=0,
                                   augmentation="crop_flip", worker_count=workers)
  except FileNotFoundError as error:
    print(f"end-to-end run skipped: CIFAR-10 is not in {data_dir} ({error}).")
    return None
  steps = info.num_train // batch_size if steps < 0 else steps
  key = jax.random.key(0)
  sample = next(iterator)["image"][:1]
  student = models.get(case.student, info.num_classes)
  teachers = tuple(models.get(t, info.num_classes) for t in case.teachers)
  teacher_vars = tuple(t.init(jax.random.fold_in(key, i), sample, train=False)
                       for i, t in enumerate(teachers))
  optimizer = optax.sgd(0.1, momentum=0.9)
  objective = _objectives(case.term)[1]
  states = sweep.stack_states([state_lib.create_train_state(
      student, student.init(jax.random.fold_in(key, 100), sample, train=False), optimizer,
      jax.random.fold_in(key, 200))])
  checked = finite_guard.checked_metrics(objective)
  step = finite_guard.guard(sweep.make_sweep_train_step(
      student, objective, optimizer, teacher=teachers, teacher_dtype=teacher_dtype,
      report_teacher_finite=True), checked, skip=False)
  carry = (states, finite_guard.no_bad_steps(1, len(finite_guard.checked_names(checked))))
  if jax.device_count() > 1:
    mesh = parallel.data_mesh()
    step = parallel.mesh_step(step, mesh)
    carry, teacher_vars = parallel.replicate((carry, teacher_vars), mesh)
    place_batch = lambda b: parallel.shard_batch(b, mesh)  # noqa: E731
  else:
    step = jax.jit(step, donate_argnums=0)
    place_batch = dict
  carry, metrics = step(carry, teacher_vars, place_batch(next(iterator)))
  jax.block_until_ready(metrics)
  meter = _LoadMeter()
  start = time.perf_counter()
  for i in range(steps):
    carry, metrics = step(carry, teacher_vars, place_batch(next(iterator)))
    if (i + 1) % 50 == 0:
      jax.device_get(metrics)
  jax.block_until_ready((carry, metrics))
  total = time.perf_counter() - start
  if jax.device_get(carry[1].count).any():
    raise FloatingPointError("the end-to-end run produced non-finite values.")
  return {"case": case.name, "steps": steps, "images_per_s": steps * batch_size / total,
          "step_ms": total / steps * _MS, "pipeline_workers": workers,
          "foreign_load": meter.foreign(), "loss": float(metrics["loss"][0])}


# ---------------------------------------------------------------------------------------------
# Report.


def _ratio(a: float | None, b: float | None) -> float | None:
  return None if a is None or b is None or b == 0 else a / b


def case_ratios(medians: Mapping[str, float], num_students: int,
                pipeline_images_per_s: float | None, batch_size: int) -> dict[str, float]:
  """The headline ratios of one case from its medians (ms); missing inputs are skipped."""
  m = medians.get
  limit = None if m("teacher") is None or m("student") is None else m("teacher") + m("student")
  ratios = {
      "kd / (teacher + student)": _ratio(m("kd"), limit),
      "kd / torch_kd": _ratio(m("kd"), m("torch_kd")),
      "cached / torch_kd": _ratio(m("cached"), m("torch_kd")),
      f"sweep / ({num_students} × kd)": _ratio(m("sweep"), None if m("kd") is None
                                               else num_students * m("kd")),
      "teacher / torch_teacher": _ratio(m("teacher"), m("torch_teacher")),
      "student / torch_student": _ratio(m("student"), m("torch_student")),
      "student / naive": _ratio(m("student"), m("naive")),
      "student / student_1dev": _ratio(m("student"), m("student_1dev")),
      f"sweep_vmap / ({num_students} × kd)": _ratio(m("sweep_vmap"), None if m("kd") is None
                                                    else num_students * m("kd")),
      "cached / torch_cached": _ratio(m("cached"), m("torch_cached")),
  }
  if pipeline_images_per_s is not None and m("student"):
    ratios["pipeline img/s / student img/s"] = pipeline_images_per_s / (
        batch_size / (m("student") / _MS))
  return {k: v for k, v in ratios.items() if v is not None}


def _machine() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), platform.processor())
  except OSError:
    model = platform.processor()
  return f"{model}, {os.cpu_count()} CPUs"


def _versions(with_torch: bool) -> dict[str, str]:
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  versions = {"python": platform.python_version(), "jax": jax.__version__,
              "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__}
  if with_torch:
    import torch  # pylint: disable=g-import-not-at-top
    versions["torch"] = torch.__version__
  return versions


def format_table(results: Mapping[str, Any]) -> str:
  """The human-readable table of medians and ratios."""
  lines = []
  n = results["settings"]["num_students"]
  header = (f"{'step':<40} {'JAX ms':>8} {'IQR':>13} {'min-max':>13} {'torch ms':>9} "
            f"{'JAX/torch':>9}")
  for case_name, case in results["cases"].items():
    lines += ["", f"== {case_name}  (rounds: {case['rounds_kept']} of {case['rounds_run']}"
              f"{'' if case['clean'] else ', NOISY: too few quiet rounds'}; median foreign "
              f"load {case['median_foreign_load']:.0%}; first call of (c) "
              f"{case['compile_s'].get('kd', float('nan')):.1f} s)", header]
    steps = case["steps"]
    for name, label in _STEP_NAMES.items():
      if name not in steps:
        continue
      s = steps[name]
      t = steps.get(f"torch_{name}")
      torch_ms = f"{t['median_ms']:9.1f}" if t else f"{'':9}"
      ratio = f"{s['median_ms'] / t['median_ms']:9.2f}" if t else f"{'':9}"
      lines.append(f"{label.format(n=n):<40} {s['median_ms']:8.1f} "
                   f"{s['q25_ms']:6.1f}-{s['q75_ms']:<6.1f} {s['min_ms']:6.1f}-{s['max_ms']:<6.1f} "
                   f"{torch_ms} {ratio}")
    lines.append("ratios: " + "; ".join(f"{k} = {v:.2f}" for k, v in case["ratios"].items()))
  pipeline = results.get("pipeline")
  if pipeline:
    lines += ["", f"(f) CIFAR-10 input pipeline (crop+flip, batch "
              f"{results['settings']['batch_size']}): {pipeline['images_per_s']:.0f} img/s "
              f"(median {pipeline['per_batch']['median_ms']:.1f} ms/batch over "
              f"{pipeline['batches']} batches; foreign load {pipeline['foreign_load']:.0%})"]
  e2e = results.get("end_to_end")
  if e2e:
    lines += ["", f"end to end, {e2e['case']}, real pipeline (crop+flip, "
              f"{e2e['pipeline_workers']} workers): {e2e['images_per_s']:.0f} img/s, "
              f"{e2e['step_ms']:.1f} ms/step over {e2e['steps']} steps (foreign load "
              f"{e2e['foreign_load']:.0%})"]
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main.


def _cases() -> list[Case]:
  cases = []
  for pair in _PAIRS.value:
    teacher, sep, student = pair.partition(":")
    if not sep or not teacher or not student:
      raise app.UsageError(f"--pairs entry {pair!r} must be teacher:student, e.g. "
                           f"resnet56:resnet8.")
    cases.append(Case(f"{teacher} -> {student}", (teacher,), student, "kd"))
  if _DGKD.value:
    cases.append(Case("dgkd resnet26+20+14 -> resnet8", ("resnet26", "resnet20", "resnet14"),
                      "resnet8", "dgkd"))
  return cases


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from kdjax import performance  # pylint: disable=g-import-not-at-top
  if _PERFORMANCE_DEFAULTS.value or _DEVICES.value:
    applied = performance.configure(batch_sizes=(_BATCH_SIZE.value,),
                                    num_cpu_devices=_DEVICES.value,
                                    compilation_cache_dir=_COMPILATION_CACHE_DIR.value or "")
  else:
    applied = {"num_cpu_devices": 1, "source": "--noperformance_defaults",
               "compilation_cache_dir": performance.enable_compilation_cache(
                   _COMPILATION_CACHE_DIR.value or "")}
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  measure = [m.strip() for m in _MEASURE.value]
  unknown = sorted(set(measure) - {*_STEP_NAMES, "pipeline"} - {"student_1dev"})
  if unknown:
    raise app.UsageError(f"--measure names unknown steps {unknown}; valid: "
                         f"{', '.join([*_STEP_NAMES, 'pipeline'])}.")
  use_torch = _TORCH.value
  if use_torch:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      print("--torch: PyTorch is not installed (pip install torch==2.13.0); skipping it.")
      use_torch = False
    else:
      torch.set_num_threads(2)
  teacher_dtype = jnp.bfloat16 if _TEACHER_DTYPE.value == "bfloat16" else None
  batch_size, num_students = _BATCH_SIZE.value, _NUM_STUDENTS.value
  max_rounds = _MAX_ROUNDS.value or 3 * _STEPS.value

  results = {
      "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "machine": _machine(),
      "versions": _versions(use_torch),
      "command": " ".join([os.path.basename(sys.executable), "-m", "launch.benchmark",
                           *sys.argv[1:]]),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "performance": applied,
      "devices": [str(d) for d in jax.devices()],
      "settings": {"batch_size": batch_size, "num_students": num_students,
                   "steps": _STEPS.value, "warmup": _WARMUP.value,
                   "teacher_dtype": _TEACHER_DTYPE.value, "measure": measure,
                   "max_foreign_load": _MAX_FOREIGN_LOAD.value},
      "cases": {},
  }
  pipeline = None
  data_dir = os.path.normpath(_DATA_DIR.value or os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir, "shared",
      "data", "tensorflow_datasets"))
  if "pipeline" in measure:
    pipeline = time_pipeline(data_dir, batch_size=batch_size,
                             num_batches=_PIPELINE_BATCHES.value, warmup=_WARMUP.value)
    results["pipeline"] = pipeline
  for case in _cases():
    logging.info("building %s", case.name)
    steps = jax_steps(case, measure, batch_size=batch_size, num_students=num_students,
                      teacher_dtype=teacher_dtype)
    if use_torch:
      steps.update(torch_steps(case, measure, batch_size=batch_size))
    if not steps:
      continue
    timings, info = time_interleaved(steps, rounds=_STEPS.value, warmup=_WARMUP.value,
                                     max_foreign_load=_MAX_FOREIGN_LOAD.value,
                                     max_rounds=max_rounds)
    summaries = {name: t.summary() for name, t in timings.items()}
    medians = {name: s["median_ms"] for name, s in summaries.items()}
    import numpy as np  # pylint: disable=g-import-not-at-top
    results["cases"][case.name] = {
        "teachers": list(case.teachers), "student": case.student, "term": case.term,
        "steps": summaries,
        "times_ms": {name: [x * _MS for x in t.times] for name, t in timings.items()},
        "ratios": case_ratios(medians, num_students,
                              pipeline["images_per_s"] if pipeline else None, batch_size),
        "compile_s": info["first_call_s"],
        "foreign_load": info["foreign_load"],
        "median_foreign_load": float(np.median(info["foreign_load"])),
        "rounds_run": info["rounds_run"],
        "rounds_kept": len(next(iter(timings.values())).times),
        "clean": info["clean"],
    }
    del steps
  if _END_TO_END_STEPS.value:
    results["end_to_end"] = time_end_to_end(
        _cases()[0], data_dir, batch_size=batch_size, steps=_END_TO_END_STEPS.value,
        workers=_PIPELINE_WORKERS.value, teacher_dtype=teacher_dtype)
  print(f"kdjax benchmark, {results['date']}, {results['machine']}")
  print("versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()))
  print(f"devices: {len(results['devices'])} ({jax.default_backend()}); performance "
        f"settings: {applied}; XLA_FLAGS={results['xla_flags']!r}")
  print(format_table(results))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=1)
    print(f"wrote {_JSON.value}")


if __name__ == "__main__":
  app.run(main)
