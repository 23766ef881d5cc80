"""Many students, one compiled program: ``jax.vmap`` over stacked train states.

Students that differ in seed (``rng``, initial params) or in objective hyperparameters
(``TrainState.hparams``, see ``Objective.overrides``) train together on the same batches.
The teacher runs once per step, outside the vmap, and its outputs are shared: a sweep of N
students costs one teacher forward plus N student steps, batched into the same kernels.

What a per-student override reaches: every weight and hyperparameter the objective reports
(``Objective.hyperparameter_names``: the terms' ``"weight/<label>"`` and
``"<label>/<hyperparameter>"``, plus its ``extra_hyperparameters``). The loss terms read
them directly; the output transformation gets them as ``hyperparameters=`` and follows
those it names. For DKP as a transformation (``kdjax.transforms.dkp``) that means: build
it with ``temperature="kd/temperature"`` and ``weight="weight/kd"`` so that it follows the
KD term's temperature and weight overrides, and with ``gamma="dkp/gamma"`` plus
``extra_hyperparameters={"dkp/gamma": ...}`` in the objective for one gamma per student.
A transformation's own scalar or schedule does not follow overrides; an override of a name
the objective does not declare is refused (``ValueError`` naming it), never ignored.

Example: three students, one temperature each, in one compiled program.

  >>> from kdjax import models, objective
  >>> from kdjax.state import create_train_state
  >>> teacher, student = models.get("mlp", 10), models.get("mlp_tiny", 10)
  >>> images = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
  >>> teacher_vars = teacher.init(jax.random.key(1), images, train=False)
  >>> obj = objective.Objective((objective.term("kd", temperature=4.0),))
  >>> opt = optax.adam(1e-3)
  >>> states = stack_states([
  ...     create_train_state(student, student.init(jax.random.key(i), images, train=False),
  ...                        opt, jax.random.key(i), hparams=obj.overrides({"kd/temperature": t}))
  ...     for i, t in enumerate((2.0, 4.0, 8.0))])
  >>> step = jax.jit(make_sweep_train_step(student, obj, opt, teacher=teacher))
  >>> states, metrics = step(states, teacher_vars, {"image": images})
  >>> metrics["loss"].shape, metrics["kd/temperature"].tolist()
  ((3,), [2.0, 4.0, 8.0])
  >>> [int(s.step) for s in unstack_states(states)]
  [1, 1, 1]

Example: DKP as an output transformation, one (temperature, gamma) per student.

  >>> from kdjax import transforms
  >>> obj = objective.Objective(
  ...     (objective.term("ce", 0.1), objective.term("kd", 0.9, temperature=4.0)),
  ...     extra_hyperparameters={"dkp/gamma": (0.5, {"low": 0.0, "high": 1.0})})
  >>> dkp = transforms.dkp("kd/temperature", "dkp/gamma", weight="weight/kd")
  >>> states = stack_states([
  ...     create_train_state(student, student.init(jax.random.key(i), images, train=False),
  ...                        opt, jax.random.key(i), output_tx=dkp,
  ...                        hparams=obj.overrides({"kd/temperature": t, "dkp/gamma": g}))
  ...     for i, (t, g) in enumerate(((2.0, 0.0), (8.0, 1.0)))])
  >>> step = jax.jit(make_sweep_train_step(student, obj, opt, teacher=teacher, output_tx=dkp))
  >>> batch = {"image": images, "label": jnp.arange(8)}
  >>> states, metrics = step(states, teacher_vars, batch)
  >>> metrics["kd/temperature"].tolist(), metrics["dkp/gamma"].tolist()
  ([2.0, 8.0], [0.0, 1.0])
  >>> obj.overrides({"dkp/beta": 1.0})
  Traceback (most recent call last):
  ...
  ValueError: unknown hyperparameter 'dkp/beta'; valid: 'weight/ce', 'weight/kd', ...
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp
import optax

from kdjax import batch as batch_lib
from kdjax import heads as heads_lib
from kdjax import networks
from kdjax import objective as objective_lib
from kdjax import step as step_lib
from kdjax.state import TrainState


def stack_states(states: Sequence[TrainState]) -> TrainState:
  """Stacks states of identical structure along a new leading student axis.

  Args:
    states: one ``TrainState`` per student (same model, optimizer, heads, hparams keys).

  Returns:
    One ``TrainState`` whose every leaf has a leading axis of ``len(states)``.

  Raises:
    ValueError: if ``states`` is empty or their structures (or hparams keys) differ.

  Example:
    >>> from kdjax import models
    >>> from kdjax.state import create_train_state
    >>> student = models.get("mlp_tiny", 10)
    >>> images = jnp.ones((1, 8, 8, 1))
    >>> states = [create_train_state(student, student.init(jax.random.key(i), images, train=False),
    ...                              optax.sgd(0.1), jax.random.key(i)) for i in range(3)]
    >>> stack_states(states).step.shape
    (3,)
    >>> stack_states([])
    Traceback (most recent call last):
    ...
    ValueError: stack_states needs at least one state.
  """
  if not states:
    raise ValueError("stack_states needs at least one state.")
  structures = {jax.tree.structure(s) for s in states}
  if len(structures) != 1:
    raise ValueError("states to stack must share one structure (same model, optimizer, aux "
                     "heads and hparams keys); they differ.")
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def unstack_states(states: TrainState) -> list[TrainState]:
  """Splits stacked states back into one state per student (``stack_states`` undone).

  Args:
    states: a ``TrainState`` with a leading student axis on every leaf.

  Returns:
    The list of per-student states.

  Example:
    >>> from kdjax import models
    >>> from kdjax.state import create_train_state
    >>> student = models.get("mlp_tiny", 10)
    >>> images = jnp.ones((1, 8, 8, 1))
    >>> state = create_train_state(student, student.init(jax.random.key(0), images, train=False),
    ...                            optax.sgd(0.1), jax.random.key(0))
    >>> [int(s.step) for s in unstack_states(stack_states([state, state]))]
    [0, 0]
  """
  num_students = jax.tree.leaves(states)[0].shape[0]
  return [jax.tree.map(lambda x, i=i: x[i], states) for i in range(num_students)]


def over_students(fn: Callable[..., Any], *, vectorize: bool | None = None
                  ) -> Callable[..., Any]:
  """Maps ``fn(state, *shared)`` over stacked states; the other arguments are shared.

  The students' outputs are stacked like their states. ``vectorize``: ``True`` is
  ``jax.vmap(fn, in_axes=(0, None, ...))``; ``False`` calls ``fn`` once per student inside
  the same program (unrolled); ``None`` (default) is ``False`` on the CPU backend and
  ``True`` elsewhere, decided when traced. On XLA:CPU a vmapped convolution with
  per-student weights becomes a grouped convolution, several times slower than separate
  ones (see ``make_sweep_train_step``). Use it for train and eval steps alike.

  Args:
    fn: ``(state, *shared) -> outputs`` for one student, e.g. a train or eval step.
    vectorize: ``True`` (vmap), ``False`` (unrolled) or ``None`` (by backend).

  Returns:
    ``(states, *shared) -> outputs`` stacked along the student axis.

  Example:
    >>> from kdjax import models
    >>> from kdjax import step as step_lib
    >>> from kdjax.state import create_train_state
    >>> student = models.get("mlp_tiny", 10)
    >>> images = jnp.ones((4, 8, 8, 1))
    >>> states = stack_states([create_train_state(
    ...     student, student.init(jax.random.key(i), images, train=False), optax.sgd(0.1),
    ...     jax.random.key(i)) for i in range(2)])
    >>> evaluate = jax.jit(over_students(step_lib.make_eval_step(student)))
    >>> metrics = evaluate(states, None, {"image": images, "label": jnp.zeros(4, jnp.int32)})
    >>> metrics["accuracy"].shape
    (2,)
  """

  def mapped(states, *shared):
    if vectorize or (vectorize is None and jax.default_backend() != "cpu"):
      return jax.vmap(fn, in_axes=(0, *[None] * len(shared)))(states, *shared)
    num_students = jax.tree.leaves(states)[0].shape[0]
    results = [fn(jax.tree.map(lambda x, i=i: x[i], states), *shared)
               for i in range(num_students)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *results)

  return mapped


def make_sweep_train_step(student: networks.Network | nn.Module,
                          objective: objective_lib.Objective,
                          optimizer: optax.GradientTransformation,
                          *,
                          teacher: step_lib.Teacher | None = None,
                          teacher_dtype: jnp.dtype | None = None,
                          output_tx: optax.GradientTransformation | None = None,
                          aux_heads: Mapping[str, heads_lib.AuxHead] | None = None,
                          axis_name: str | None = None,
                          student_dtype: jnp.dtype | None = None,
                          log_schedules: step_lib.LogSchedules | None = None,
                          vectorize: bool | None = None,
                          report_teacher_finite: bool = False
                          ) -> step_lib.TrainStep:
  """Builds ``(states, teacher_vars, batch) -> (states, metrics)`` for stacked students.

  Arguments as in ``kdjax.step.make_train_step``. ``states`` has a leading student axis
  (``stack_states``); ``teacher_vars`` and ``batch`` are shared; every metric gains the
  student axis.

  ``vectorize`` chooses how the students' updates are batched, with the same numbers
  either way: ``True`` vmaps them (one batched program, the fast form on GPU and TPU);
  ``False`` updates them one after another in the same program (on XLA:CPU a vmapped
  convolution with per-student weights becomes a grouped convolution: 4 ResNet-8 students
  took 1.3× the time of 4 separate steps on one CPU device, 10× over 8 virtual devices,
  against 0.5× unrolled; see ``docs/benchmarks.md``); ``None`` (default): ``False`` on the
  CPU backend, ``True`` elsewhere. The teacher runs once either way.

  ``report_teacher_finite`` adds the metric ``"teacher_finite"`` (bool ``[S]``: are all
  the teacher outputs of the step finite?), which ``kdjax.finite_guard.guard`` reads.

  Returns:
    The sweep train step, to ``jax.jit`` (or ``jax.pmap`` with ``axis_name``).

  Raises:
    ValueError: as ``kdjax.step.make_train_step``.

  Example: see the module docstring (three students with one temperature each).
  """
  teacher_forward = step_lib.make_teacher_forward(
      teacher, features=objective.teacher_features, dtype=teacher_dtype)
  update = step_lib.make_student_update(
      student, objective, optimizer, output_tx=output_tx, aux_heads=aux_heads,
      axis_name=axis_name, student_dtype=student_dtype, log_schedules=log_schedules)
  update_all = over_students(update, vectorize=vectorize)

  def sweep_step(states: TrainState, teacher_vars: Any,
                 batch: batch_lib.Batch) -> tuple[TrainState, step_lib.Metrics]:
    # Computed here, outside the vmap: the teacher forward appears once in the program.
    teacher_outputs = teacher_forward(teacher_vars, batch)
    states, metrics = update_all(states, teacher_outputs, batch)
    if report_teacher_finite:
      finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                                  for x in jax.tree.leaves(teacher_outputs)] or [True]))
      metrics = {**metrics, step_lib.TEACHER_FINITE: jnp.broadcast_to(finite, states.step.shape)}
    return states, metrics

  return sweep_step
