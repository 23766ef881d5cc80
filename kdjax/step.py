"""Pure distillation steps: ``(state, teacher_vars, batch) -> (state, metrics)``.

A train step runs the teacher(s) in eval mode on the batch the student sees (or reads their
cached logits from the batch), then differentiates the objective as DESIGN §5 prescribes::

    values = objective.schedule_values(step, state.hparams)  # per-student overrides applied
    outputs, pullback, new_model_state = jax.vjp(student_forward, trainables, has_aux=True)
    (loss, terms), g_out = jax.value_and_grad(objective.loss, has_aux=True)(outputs, ...)
    g_out, out_tx_state = output_tx.update(g_out, out_tx_state, outputs,
                                           teacher_logits=..., labels=..., mask=...,
                                           hyperparameters=values)
    (grads,) = pullback(g_out)
    updates, opt_state = optimizer.update(grads, opt_state, trainables)

one forward and one backward pass of the student, whatever the output transformation.
``teacher_vars`` is an explicit argument: never closed over (so not baked into the compiled
program), never differentiated (its outputs pass through ``stop_gradient``), never returned
(so it cannot be donated with the state).

Metrics, a flat dict of float32 scalars:

- ``"loss"``: the objective; ``"loss/<label>"``: each term's unweighted batch mean;
- ``"weight/<label>"`` and ``"<label>/<hyperparameter>"`` (e.g. ``"kd/temperature"``,
  ``"annealing/phi"``, ``"dkp/gamma"``): every schedule's value at this step (the
  objective's extra hyperparameters and per-student overrides included: the values the
  step used), plus the ``log_schedules`` given to the builder (e.g. ``"learning_rate"``);
- ``"accuracy"`` (with labels); ``"agreement"`` (student and first teacher agree on the
  top-1 class) and ``"kl_teacher_student"`` (KL(teacher ‖ student) at T = 1) with a teacher;
- ``"grad_norm"``: the global norm of the (device-averaged) gradient.

Parallel forms (``kdjax.parallel``): with ``axis_name`` set, the step is written for
``jax.pmap``: gradients, model state and metrics are averaged over the axis *in the step*
(never inside losses), weighted by each device's share of real (unmasked) examples, so that
the result equals the single-device step on the global batch. BatchNorm: the running
``batch_stats`` are averaged across devices (``lax.pmean``); normalisation itself uses the
device-local batch unless the model's BatchNorm layers are built with the same
``axis_name`` (synchronised BatchNorm), which is what makes ``pmap`` give the single-device
numbers. Under ``jax.jit`` over a mesh (``axis_name=None``) the step is written for the
global batch, so BatchNorm statistics are global with no help from the model.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp
import optax

from kdjax import batch as batch_lib
from kdjax import heads as heads_lib
from kdjax import losses, networks, schedules
from kdjax import objective as objective_lib
from kdjax.state import TrainState

Metrics = dict[str, jax.Array]
# A sweep step's metric (``kdjax.sweep``): are the step's teacher outputs all finite?
TEACHER_FINITE = "teacher_finite"
TeacherOutputs = dict[str, jax.Array]
TrainStep = Callable[[TrainState, Any, batch_lib.Batch], tuple[TrainState, Metrics]]
Update = Callable[[TrainState, TeacherOutputs | None, batch_lib.Batch],
                  tuple[TrainState, Metrics]]
TeacherForward = Callable[[Any, batch_lib.Batch], TeacherOutputs | None]
Teacher = networks.Network | nn.Module | Sequence[networks.Network | nn.Module]
# Metric name -> a schedule, or the name of an objective hyperparameter to report again.
LogSchedules = Mapping[str, schedules.ScalarOrSchedule | str]


def make_teacher_forward(teacher: Teacher | None,
                         *,
                         features: Sequence[str] = (),
                         dtype: jnp.dtype | None = None) -> TeacherForward:
  """Builds ``(teacher_vars, batch) -> teacher outputs``, the teacher side of a step.

  The teachers run in eval mode (``train=False``) on ``batch["image"]``. Their logits are
  stacked as ``"logits"`` ``[n, B, K]`` (the teacher first, then its assistants); the
  requested features come from the first teacher. Everything returned passes through
  ``stop_gradient``. With no teacher, the outputs are read from ``batch["teacher_logits"]``
  (``[B, K]`` or ``[B, n, K]``, see ``kdjax.teacher_cache``), or are ``None`` if the batch
  has none.

  Args:
    teacher: a network or Linen module, a sequence of them (``teacher_vars`` is then a
      sequence of as many variable pytrees), or ``None`` for cached logits.
    features: names of the first teacher's features to return.
    dtype: run the teachers in this dtype (e.g. ``jnp.bfloat16``): floating variables and
      inputs are cast to it, outputs cast back to float32. Modules with an explicit
      computation ``dtype`` field should also be built with it.

  Returns:
    The teacher forward function.

  Raises:
    ValueError: at build time for features without a teacher; at the first call for a
      wrong number of variable pytrees, missing variables, or teachers whose class counts
      differ.

  Example:
    >>> from kdjax import models
    >>> teacher, assistant = models.get("mlp", 10), models.get("mlp_tiny", 10)
    >>> images = jnp.ones((4, 8, 8, 1))
    >>> variables = [m.init(jax.random.key(i), images, train=False)
    ...              for i, m in enumerate((teacher, assistant))]
    >>> forward = make_teacher_forward((teacher, assistant))
    >>> forward(variables, {"image": images})["logits"].shape  # [n, B, K]
    (2, 4, 10)
    >>> make_teacher_forward(None)(None, {"image": images}) is None  # no cached logits
    True
  """
  if teacher is None:
    if features:
      raise ValueError(f"teacher features {list(features)} cannot come from cached logits; "
                       f"pass the teacher to the step builder.")
    return _cached_teacher_outputs
  single = not isinstance(teacher, Sequence)
  teachers = tuple(map(networks.as_network, (teacher,) if single else teacher))
  if not teachers:
    raise ValueError("teacher is an empty sequence; pass None to read cached logits.")

  def forward(teacher_vars, batch):
    if teacher_vars is None:
      raise ValueError("teacher_vars is None but the step was built with a teacher.")
    all_vars = (teacher_vars,) if single else tuple(teacher_vars)
    if len(all_vars) != len(teachers):
      raise ValueError(f"got {len(all_vars)} teacher variable pytrees for {len(teachers)} "
                       f"teachers.")
    images = jnp.asarray(batch[batch_lib.IMAGE])
    if dtype is not None:
      all_vars = _cast_floating(all_vars, dtype)
      images = _cast_floating(images, dtype)
    outputs = []
    for i, (network, variables) in enumerate(zip(teachers, all_vars, strict=True)):
      params, model_state = network.split(variables)
      out, _ = network.apply(params, model_state, images, train=False,
                             features=tuple(features) if i == 0 else ())
      outputs.append(out)
    classes = [o[networks.LOGITS].shape[-1] for o in outputs]
    if len(set(classes)) > 1:
      raise ValueError(f"teachers disagree on the number of classes: {classes}.")
    result = {networks.LOGITS: jnp.stack([o[networks.LOGITS] for o in outputs])}
    result.update({f: outputs[0][f] for f in features})
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x.astype(jnp.float32)), result)

  return forward


def _cached_teacher_outputs(teacher_vars, batch) -> TeacherOutputs | None:
  del teacher_vars
  if batch_lib.TEACHER_LOGITS not in batch:
    return None
  logits = jnp.asarray(batch[batch_lib.TEACHER_LOGITS], jnp.float32)
  if logits.ndim == 2:
    logits = logits[None]
  elif logits.ndim == 3:
    logits = jnp.moveaxis(logits, 1, 0)
  else:
    raise ValueError(f"batch['teacher_logits'] must be [B, K] or [B, n, K]; got shape "
                     f"{logits.shape}.")
  return {networks.LOGITS: jax.lax.stop_gradient(logits)}


def make_student_update(student: networks.Network | nn.Module,
                        objective: objective_lib.Objective,
                        optimizer: optax.GradientTransformation,
                        *,
                        output_tx: optax.GradientTransformation | None = None,
                        aux_heads: Mapping[str, heads_lib.AuxHead] | None = None,
                        axis_name: str | None = None,
                        student_dtype: jnp.dtype | None = None,
                        log_schedules: LogSchedules | None = None) -> Update:
  """Builds ``(state, teacher_outputs, batch) -> (state, metrics)``, the student side of a step.

  Use it when the teacher's outputs come from elsewhere: ``make_train_step`` composes it
  with ``make_teacher_forward``; ``kdjax.sweep`` maps it over students with the teacher
  outputs computed once; the trainer wraps it with a finiteness check. Arguments as in
  ``make_train_step``; ``teacher_outputs`` is what ``make_teacher_forward`` returns
  (``{"logits": [n, B, K], <feature>: ...}``) or ``None`` without a teacher.

  Returns:
    The update function.

  Raises:
    ValueError: at build time when ``log_schedules`` names clash with the objective's
      metrics or name a hyperparameter the objective lacks, or an aux head reads another
      head; at the first call for a state whose aux heads differ, whose ``opt_state`` or
      ``output_tx_state`` another optimizer or output transformation made, a batch without
      images, or teacher logits whose class count differs from the student's.

  Example:
    >>> from kdjax import models, objective
    >>> from kdjax.state import create_train_state
    >>> student = models.get("mlp_tiny", 10)
    >>> images = jnp.ones((4, 8, 8, 1))
    >>> obj = objective.Objective((objective.term("kd", temperature=2.0),))
    >>> opt = optax.sgd(0.1)
    >>> state = create_train_state(student, student.init(jax.random.key(0), images, train=False),
    ...                            opt, jax.random.key(1))
    >>> update = jax.jit(make_student_update(student, obj, opt))
    >>> teacher_outputs = {"logits": jnp.zeros((1, 4, 10))}  # one teacher, batch 4, K = 10
    >>> state, metrics = update(state, teacher_outputs, {"image": images})
    >>> int(state.step), float(metrics["kd/temperature"])
    (1, 2.0)
  """
  student = networks.as_network(student)
  heads = heads_lib.check_heads(aux_heads or {})
  output_tx = optax.with_extra_args_support(output_tx or optax.identity())
  log_schedules = dict(log_schedules or {})
  _check_update_arguments(objective, heads, log_schedules)
  forward = _student_forward(student, objective, heads, student_dtype)

  def update(state, teacher_outputs, batch):
    batch_lib.batch_size(batch)
    if set(state.aux_params) != set(heads):
      raise ValueError(f"the state has aux heads {sorted(state.aux_params)} but the step was "
                       f"built with {sorted(heads)}.")
    _check_state_fits("optimizer", state.opt_state,
                      jax.eval_shape(optimizer.init, state.trainables))
    _check_state_fits("output_tx", state.output_tx_state,
                      jax.eval_shape(output_tx.init, None))
    if batch_lib.TEACHER_TEMPERATURE in batch:  # the teacher's targets come from a sparse cache
      objective.check_cache_overrides(state.hparams)
    images = jnp.asarray(batch[batch_lib.IMAGE])
    labels, mask = _labels_and_mask(batch)
    key = jax.random.fold_in(state.rng, state.step)
    model_key, loss_key = jax.random.split(key)
    if axis_name is not None:
      # Stochastic layers draw independently on each device; the loss key (e.g. DGKD's
      # teacher dropping, one draw per global batch) stays the same everywhere.
      model_key = jax.random.fold_in(model_key, jax.lax.axis_index(axis_name))
    values = objective.schedule_values(state.step, state.hparams)

    outputs, pullback, (model_state, aux_state) = jax.vjp(
        lambda t: forward(t, state.model_state, state.aux_state, images, model_key),
        state.trainables, has_aux=True)
    _check_teacher_fits(outputs[networks.LOGITS], teacher_outputs)
    (loss, terms), g_out = jax.value_and_grad(objective.loss, has_aux=True)(
        outputs, teacher_outputs, labels, mask, values, loss_key)
    extra_args = {"labels": labels, "mask": mask, "hyperparameters": values}
    if teacher_outputs is not None:
      extra_args["teacher_logits"] = teacher_outputs[networks.LOGITS][0]
    g_out, output_tx_state = output_tx.update(g_out, state.output_tx_state, outputs,
                                              **extra_args)
    share = _device_share(mask, axis_name)
    if share is not None:
      g_out = jax.tree.map(lambda g: g * share, g_out)
    (grads,) = pullback(g_out)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      model_state, aux_state = _pmean_floating((model_state, aux_state), axis_name)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainables)
    trainables = optax.apply_updates(state.trainables, updates)

    metrics = {"loss": loss, **terms,
               **_prediction_metrics(outputs[networks.LOGITS], teacher_outputs, labels, mask)}
    metrics = _average_over_devices(metrics, share, axis_name)
    metrics.update(values)
    metrics.update({k: values[s] if isinstance(s, str) else schedules.resolve(s, state.step)
                    for k, s in log_schedules.items()})
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.replace(
        step=state.step + 1,
        params=trainables["student"],
        aux_params=trainables["aux"],
        model_state=model_state,
        aux_state=aux_state,
        opt_state=opt_state,
        output_tx_state=output_tx_state)
    return new_state, metrics

  return update


def _student_forward(student: networks.Network, objective: objective_lib.Objective,
                     heads: Mapping[str, heads_lib.AuxHead], student_dtype: jnp.dtype | None
                     ) -> Callable[..., Any]:
  """``(trainables, model_state, aux_state, images, key) -> (outputs, (model_state, aux_state))``.

  The student in train mode, with the features its terms and aux heads read, and the aux
  heads' outputs added to its outputs.
  """
  # The student is asked for the features the terms read (unless a head produces them) and
  # those the heads read.
  student_features = tuple(dict.fromkeys(
      [f for f in objective.student_features if f not in heads]
      + [h.source for h in heads.values()]))

  def forward(trainables, model_state, aux_state, images, key):
    params = trainables["student"]
    if student_dtype is not None:
      params, images = _cast_floating((params, images), student_dtype)
    outputs, new_model_state = student.apply(params, model_state, images, train=True,
                                             features=student_features, rng=key)
    if student_dtype is not None:  # statistics computed in low precision keep their dtype
      new_model_state = jax.tree.map(
          lambda new, old: new.astype(old.dtype) if jnp.issubdtype(old.dtype, jnp.floating)
          else new, new_model_state, model_state)
    outputs = {k: v.astype(jnp.float32) for k, v in outputs.items()}
    new_aux_state = {}
    for name, head in sorted(heads.items()):
      out, new_aux_state[name] = head.network.apply(
          trainables["aux"][name], aux_state[name], outputs[head.source], train=True)
      outputs[name] = out[networks.LOGITS]
    return outputs, (new_model_state, new_aux_state)

  return forward


def _check_state_fits(what: str, state_part: Any, expected: Any) -> None:
  """Refuses a state whose ``opt_state`` or ``output_tx_state`` another transformation made.

  The state and the step each receive the optimizer (and the output transformation); given
  different ones, optax would fail deep inside ``update`` (``'ScaleByAdamState' object has
  no attribute 'trace'``). Comparing tree structures names the mismatch instead.
  """
  if jax.tree.structure(state_part) == jax.tree.structure(expected):
    return
  field = "opt_state" if what == "optimizer" else "output_tx_state"
  raise ValueError(f"state.{field} holds {_state_types(state_part)} but the step's {what} "
                   f"makes {_state_types(expected)}: pass the same {what} to "
                   f"create_train_state and to the step builder.")


def _state_types(tree: Any) -> list[str]:
  """The names of the optax state types in a tree, in order, e.g. ``['TraceState']``."""
  names = []

  def visit(node):
    if isinstance(node, tuple) and hasattr(node, "_fields"):
      names.append(type(node).__name__)
    if isinstance(node, (tuple, list)):
      for child in node:
        visit(child)
    elif isinstance(node, Mapping):
      for child in node.values():
        visit(child)

  visit(tree)
  return names


def _check_update_arguments(objective: objective_lib.Objective,
                            heads: Mapping[str, heads_lib.AuxHead],
                            log_schedules: Mapping[str, Any]) -> None:
  """Refuses log_schedules that clash with or name no objective metric, heads on heads."""
  clashes = sorted(set(log_schedules) & set(objective.hyperparameter_names))
  if clashes:
    raise ValueError(f"log_schedules names {clashes} clash with the objective's metrics.")
  aliases = {k: v for k, v in log_schedules.items() if isinstance(v, str)}
  unknown = sorted(f"{k}={v!r}" for k, v in aliases.items()
                   if v not in objective.hyperparameter_names)
  if unknown:
    raise ValueError(f"log_schedules {unknown} name no hyperparameter of the objective; "
                     f"valid: {', '.join(map(repr, objective.hyperparameter_names))}.")
  for name, head in heads.items():
    if head.source in heads:
      raise ValueError(f"aux head {name!r} reads {head.source!r}, which is an aux head's "
                       f"output; heads read student features.")


def make_train_step(student: networks.Network | nn.Module,
                    objective: objective_lib.Objective,
                    optimizer: optax.GradientTransformation,
                    *,
                    teacher: Teacher | None = None,
                    output_tx: optax.GradientTransformation | None = None,
                    aux_heads: Mapping[str, heads_lib.AuxHead] | None = None,
                    axis_name: str | None = None,
                    teacher_dtype: jnp.dtype | None = None,
                    student_dtype: jnp.dtype | None = None,
                    log_schedules: LogSchedules | None = None) -> TrainStep:
  """Builds the pure distillation train step ``(state, teacher_vars, batch) -> (state, metrics)``.

  Use ``jax.jit(step, donate_argnums=0)`` on one device, or the wrappers of
  ``kdjax.parallel``; ``state`` comes from ``kdjax.state.create_train_state`` with the same
  ``output_tx`` and ``aux_heads``.

  Args:
    student: the student, a ``kdjax.networks.Network`` or a Linen module.
    objective: the loss terms, weights and schedules.
    optimizer: an optax optimizer over ``{"student": params, "aux": aux_params}``.
    teacher: the teacher (network or Linen module), or a sequence of teacher and assistants
      for multi-teacher terms (``"dgkd"``, ``"ensemble"``), or ``None`` to read
      ``batch["teacher_logits"]`` (a teacher-output cache, or no teacher at all).
    output_tx: an optax transformation of the gradient with respect to the student's
      outputs (e.g. ``kdjax.transforms.dkp``), called with ``teacher_logits``, ``labels``,
      ``mask`` and ``hyperparameters`` (the objective's values at this step, per-student
      overrides included, by name) as extra arguments; a plain
      ``optax.GradientTransformation`` gets none of them.
    aux_heads: trainable heads on student features (``kdjax.heads``), by output name.
    axis_name: the ``pmap`` axis to average over (``kdjax.parallel.pmap_step``); ``None``
      on one device and under ``jax.jit`` over a mesh.
    teacher_dtype: run the teachers in this dtype (e.g. ``jnp.bfloat16``); logits return
      as float32.
    student_dtype: compute the student forward in this dtype; params, gradients and
      optimizer state stay in their own (float32) dtype.
    log_schedules: extra schedules to report every step, e.g. ``{"learning_rate": lr}``; a
      string value reports the objective's hyperparameter of that name under a second
      name, overrides included (e.g. ``{"dkp/temperature": "kd/temperature"}``).

  Returns:
    The train step. It raises ``ValueError`` at its first (tracing) call when the batch
    lacks labels a term needs, teacher and student disagree on the number of classes, a
    feature is not sown, or the state does not match the builder's aux heads, optimizer or
    output transformation (the state must be built with the same ones).

  Raises:
    ValueError: at build time for teacher features requested from cached logits, clashing
      metric names, ``log_schedules`` naming no hyperparameter of the objective, or bad
      aux heads.

  Example:
    >>> from kdjax import models, objective
    >>> from kdjax.state import create_train_state
    >>> teacher, student = models.get("mlp", 10), models.get("mlp_tiny", 10)
    >>> images = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    >>> batch = {"image": images, "label": jnp.arange(8)}
    >>> teacher_vars = teacher.init(jax.random.key(1), images, train=False)  # a trained one
    >>> obj = objective.Objective((objective.term("ce", 0.1),
    ...                            objective.term("kd", 0.9, temperature=4.0)))
    >>> opt = optax.sgd(0.1, momentum=0.9)
    >>> state = create_train_state(student, student.init(jax.random.key(2), images, train=False),
    ...                            opt, jax.random.key(3))
    >>> step = jax.jit(make_train_step(student, obj, opt, teacher=teacher), donate_argnums=0)
    >>> for _ in range(3):  # one batch per step, normally from kdjax.data.train_iterator
    ...   state, metrics = step(state, teacher_vars, batch)
    >>> int(state.step), sorted(metrics)
    (3, ['accuracy', 'agreement', 'grad_norm', 'kd/temperature', 'kl_teacher_student', 'loss',
         'loss/ce', 'loss/kd', 'weight/ce', 'weight/kd'])
  """
  teacher_forward = make_teacher_forward(teacher, features=objective.teacher_features,
                                         dtype=teacher_dtype)
  update = make_student_update(student, objective, optimizer, output_tx=output_tx,
                               aux_heads=aux_heads, axis_name=axis_name,
                               student_dtype=student_dtype, log_schedules=log_schedules)

  def train_step(state: TrainState, teacher_vars: Any,
                 batch: batch_lib.Batch) -> tuple[TrainState, Metrics]:
    return update(state, teacher_forward(teacher_vars, batch), batch)

  return train_step


def make_eval_step(student: networks.Network | nn.Module,
                   *,
                   teacher: Teacher | None = None,
                   axis_name: str | None = None,
                   teacher_dtype: jnp.dtype | None = None,
                   student_dtype: jnp.dtype | None = None
                   ) -> Callable[[TrainState, Any, batch_lib.Batch], Metrics]:
  """Builds the pure eval step ``(state, teacher_vars, batch) -> metrics``.

  The student runs in eval mode. Metrics are means over the batch's real examples:
  ``"accuracy"`` and ``"loss/ce"`` with labels; ``"agreement"`` and ``"kl_teacher_student"``
  with a teacher (or cached ``"teacher_logits"``); plus ``"count"``, the number of real
  examples, for the host to weight batches by.

  Args:
    student: the student network or Linen module.
    teacher: as in ``make_train_step``; ``None`` reads ``batch["teacher_logits"]`` if present.
    axis_name: the ``pmap`` axis, as in ``make_train_step``.
    teacher_dtype: as in ``make_train_step``.
    student_dtype: as in ``make_train_step``.

  Returns:
    The eval step.

  Example:
    >>> from kdjax import models
    >>> from kdjax.state import create_train_state
    >>> teacher, student = models.get("mlp", 10), models.get("mlp_tiny", 10)
    >>> images = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    >>> teacher_vars = teacher.init(jax.random.key(1), images, train=False)
    >>> state = create_train_state(student, student.init(jax.random.key(2), images, train=False),
    ...                            optax.sgd(0.1), jax.random.key(3))
    >>> eval_step = jax.jit(make_eval_step(student, teacher=teacher))
    >>> batch = {"image": images, "label": jnp.arange(8), "mask": jnp.arange(8) < 6}
    >>> metrics = eval_step(state, teacher_vars, batch)  # padding (mask False) is left out
    >>> sorted(metrics), float(metrics["count"])
    (['accuracy', 'agreement', 'count', 'kl_teacher_student', 'loss/ce'], 6.0)
  """
  student = networks.as_network(student)
  teacher_forward = make_teacher_forward(teacher, dtype=teacher_dtype)

  def eval_step(state: TrainState, teacher_vars: Any, batch: batch_lib.Batch) -> Metrics:
    size = batch_lib.batch_size(batch)
    params, images = state.params, jnp.asarray(batch[batch_lib.IMAGE])
    if student_dtype is not None:
      params, images = _cast_floating((params, images), student_dtype)
    outputs, _ = student.apply(params, state.model_state, images, train=False)
    logits = outputs[networks.LOGITS].astype(jnp.float32)
    teacher_outputs = teacher_forward(teacher_vars, batch)
    _check_teacher_fits(logits, teacher_outputs)
    labels, mask = _labels_and_mask(batch)
    metrics = _prediction_metrics(logits, teacher_outputs, labels, mask)
    if labels is not None:
      metrics["loss/ce"] = losses.reduce_mean(losses.cross_entropy(logits, labels), mask=mask)
    metrics = _average_over_devices(metrics, _device_share(mask, axis_name), axis_name)
    count = jnp.sum(mask, dtype=jnp.float32) if mask is not None else jnp.float32(size)
    metrics["count"] = count if axis_name is None else jax.lax.psum(count, axis_name)
    return metrics

  return eval_step


def _labels_and_mask(batch) -> tuple[jax.Array | None, jax.Array | None]:
  labels = batch.get(batch_lib.LABEL)
  mask = batch.get(batch_lib.MASK)
  return (None if labels is None else jnp.asarray(labels),
          None if mask is None else jnp.asarray(mask))


def _check_teacher_fits(student_logits: jax.Array, teacher: TeacherOutputs | None) -> None:
  if teacher is None:
    return
  t = teacher[networks.LOGITS]
  if t.shape[-1] != student_logits.shape[-1]:
    raise ValueError(f"the teacher has {t.shape[-1]} classes but the student has "
                     f"{student_logits.shape[-1]} (teacher logits {t.shape[1:]}, student "
                     f"logits {student_logits.shape}).")
  if t.shape[1:-1] != student_logits.shape[:-1]:
    raise ValueError(f"teacher logits {t.shape[1:]} and student logits "
                     f"{student_logits.shape} cover different batches.")


def _prediction_metrics(logits: jax.Array, teacher: TeacherOutputs | None,
                        labels: jax.Array | None, mask: jax.Array | None) -> Metrics:
  """Student accuracy, and top-1 agreement and KL(teacher ‖ student) at T = 1."""
  metrics = {}
  predicted = jnp.argmax(logits, axis=-1)
  if labels is not None:
    metrics["accuracy"] = losses.reduce_mean((predicted == labels).astype(jnp.float32), mask)
  if teacher is not None:
    t = teacher[networks.LOGITS][0]
    agree = (predicted == jnp.argmax(t, axis=-1)).astype(jnp.float32)
    metrics["agreement"] = losses.reduce_mean(agree, mask)
    metrics["kl_teacher_student"] = losses.reduce_mean(losses.kd(logits, t, 1.0), mask)
  return metrics


def _device_share(mask: jax.Array | None, axis_name: str | None) -> jax.Array | None:
  r"""This device's share of the real examples, relative to the mean over devices.

  A device's masked mean :math:`\bar L_d` over :math:`c_d` real examples weighs
  :math:`c_d / \bar c` in the global mean: :math:`\bar L = \mathrm{mean}_d(\bar L_d\,c_d/\bar
  c)`. ``None`` when every device counts equally (no axis, or no mask).
  """
  if axis_name is None or mask is None:
    return None
  count = jnp.sum(mask, dtype=jnp.float32)
  mean_count = jax.lax.pmean(count, axis_name)
  return count / jnp.maximum(mean_count, jnp.finfo(jnp.float32).tiny)


def _average_over_devices(metrics: Metrics, share: jax.Array | None,
                          axis_name: str | None) -> Metrics:
  if axis_name is None:
    return metrics
  if share is not None:
    metrics = {k: v * share for k, v in metrics.items()}
  return jax.lax.pmean(metrics, axis_name)


def _pmean_floating(tree, axis_name: str):
  """Averages floating leaves (BatchNorm statistics) over devices; others pass through."""
  return jax.tree.map(
      lambda x: jax.lax.pmean(x, axis_name) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree)


def _cast_floating(tree, dtype):
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x,
      tree)
