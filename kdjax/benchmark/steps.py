"""The steps the benchmark times: one distillation setting's teacher, student and KD steps.

``jax_steps`` builds, for a ``Case`` (teachers → student), each step as a no-argument call
on random data, compiled as the trainer compiles its steps (``kdjax.parallel.mesh_step``
over several devices, ``jax.jit`` with the state donated on one): the teacher forward, the
student's cross-entropy step (and the same step written by hand with ``flax.linen`` and
``optax``), the fused KD step, the KD step on cached teacher logits, and the sweep of
several students sharing one teacher.
"""

from collections.abc import Callable, Sequence
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from kdjax import models, objective, parallel, sweep
from kdjax import state as state_lib
from kdjax import step as step_lib

# What each step is, as the benchmark's table names it.
STEP_NAMES = {
    "teacher": "(a) teacher forward (eval)",
    "student": "(b) student train step (CE)",
    "student_1dev": "    (b) on 1 device (plain jax.jit)",
    "naive": "    hand-written flax+optax step (CE)",
    "kd": "(c) fused KD step",
    "cached": "(d) KD step, cached teacher logits",
    "sweep": "(e) {n} students, one teacher (sweep)",
    "sweep_vmap": "    (e) with vectorize=True (jax.vmap)",
}


@dataclasses.dataclass(frozen=True)
class Case:
  """A distillation setting: teacher (and assistants) → student.

  Attributes:
    name: the case's title in the table.
    teachers: ``kdjax.models`` names of the teaching networks, largest first.
    student: the student's ``kdjax.models`` name.
    term: the distillation term, ``"kd"`` (one teacher) or ``"dgkd"`` (a chain).

  Example:
    >>> Case("dgkd resnet26+20+14 -> resnet8", ("resnet26", "resnet20", "resnet14"),
    ...      "resnet8", "dgkd").teachers[0]
    'resnet26'
  """

  name: str
  teachers: tuple[str, ...]
  student: str
  term: str


def objectives(term: str) -> tuple[objective.Objective, objective.Objective]:
  """``(cross-entropy alone, 0.1 · CE + 0.9 · term at T = 4)``: the timed objectives.

  Example:
    >>> ce, kd = objectives("kd")
    >>> [t.label for t in ce.terms], [(t.label, t.weight) for t in kd.terms]
    (['ce'], [('ce', 0.1), ('kd', 0.9)])
  """
  ce = objective.Objective((objective.term("ce"),))
  kd = objective.Objective((objective.term("ce", 0.1),
                            objective.term(term, 0.9, temperature=4.0)))
  return ce, kd


class _Stateful:
  """A compiled step and the state it threads through calls (donated each call)."""

  def __init__(self, fn, state, teacher_vars, batch):
    self.fn, self.state, self.teacher_vars, self.batch = fn, state, teacher_vars, batch

  def __call__(self):
    self.state, metrics = self.fn(self.state, self.teacher_vars, self.batch)
    return self.state, metrics


def jax_steps(case: Case, measure: Sequence[str], *, batch_size: int, num_students: int,
              teacher_dtype: Any = None, image_shape: tuple[int, int, int] = (32, 32, 3),
              num_classes: int = 10) -> dict[str, Callable[[], Any]]:
  """Builds the compiled JAX steps of ``case`` named in ``measure``, on random data.

  With several devices the steps run under ``kdjax.parallel.mesh_step`` (batch sharded,
  state and teachers replicated), as the trainer runs them; ``"student_1dev"`` (the
  student step on one device with XLA's default scheduler) is then added to ``"student"``.

  Args:
    case: the teachers and the student.
    measure: names of ``STEP_NAMES`` to build (others are ignored).
    batch_size: examples per step.
    num_students: students of the sweep steps.
    teacher_dtype: computation dtype of the teachers (``None``: their own).
    image_shape: ``(H, W, C)`` of the random images (CIFAR's by default).
    num_classes: classes of the random labels and of the networks.

  Returns:
    name → a call running one step (each call advances its own state).

  Example:
    >>> case = Case("mlp_tiny -> mlp_tiny", ("mlp_tiny",), "mlp_tiny", "kd")
    >>> steps = jax_steps(case, ["teacher", "kd"], batch_size=8, num_students=2,
    ...                   image_shape=(8, 8, 1))
    >>> sorted(steps), float(steps["kd"]()[1]["loss"]) > 0
    (['kd', 'teacher'], True)
  """
  key = jax.random.key(0)
  images = jax.random.normal(jax.random.fold_in(key, 0), (batch_size, *image_shape),
                             jnp.float32)
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
  ce, kd = objectives(case.term)

  mesh = parallel.data_mesh() if jax.device_count() > 1 else None
  batch = {"image": images, "label": labels}
  forward = step_lib.make_teacher_forward(teacher_arg, dtype=teacher_dtype)
  if mesh is None:
    place, place_batch = (lambda tree: tree), (lambda batch: batch)
    compile_step = lambda fn: jax.jit(fn, donate_argnums=0)  # noqa: E731
    jit_forward = jax.jit(forward)
  else:
    place = lambda tree: parallel.replicate(tree, mesh)  # noqa: E731
    place_batch = lambda batch: parallel.shard_batch(jax.device_get(batch), mesh)  # noqa: E731
    compile_step = lambda fn: parallel.mesh_step(fn, mesh)  # noqa: E731
    jit_forward = parallel.mesh_step(
        lambda _, teacher_vars, batch: forward(teacher_vars, batch), mesh, donate_state=False)
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
