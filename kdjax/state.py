"""The student-only train state: everything that trains, nothing that is frozen.

Teacher variables are never part of it: they are an explicit argument of every step (see
``kdjax.step``), so they are neither checkpointed with the student nor donated with it.
"""

from collections.abc import Mapping
from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import optax

from kdjax import heads as heads_lib
from kdjax import networks


class TrainState(struct.PyTreeNode):
  """What a distillation step updates.

  Build it with ``create_train_state`` and pass it to (and get it back from) the step; it
  is a pytree, so it can be checkpointed, donated, and stacked for sweeps
  (``kdjax.sweep.stack_states``).

  The optimizer acts on ``trainables`` = ``{"student": params, "aux": aux_params}``, so
  auxiliary heads (FitNets regressors) train with the student while ``params`` stays
  exactly the student's exportable parameters. Write ``optax.masked`` / ``multi_transform``
  masks and labels for that structure: a tree built from the model's params goes under
  ``"student"`` (``{"student": mask, "aux": False}``, ``False`` a prefix covering every
  head), or use a callable mask, which sees the whole structure.

  Attributes:
    step: the step counter, an int32 scalar; every schedule is a function of it.
    params: the student's parameters.
    model_state: the student's other variables (BatchNorm ``batch_stats``, ...).
    opt_state: the optimizer's state over ``trainables``.
    output_tx_state: the state of the transformation of output gradients.
    rng: the base PRNG key; step ``n`` uses ``fold_in(rng, n)``, so the key never changes.
    aux_params: auxiliary heads' parameters, by head name.
    aux_state: auxiliary heads' other variables, by head name.
    hparams: per-student constants that replace objective schedules, e.g.
      ``{"kd/temperature": 8.0}`` (see ``Objective.overrides``); stacked across students,
      they make hyperparameter sweeps one compiled program.

  Example:
    >>> from kdjax import models
    >>> model = models.get("mlp_tiny", 10)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), train=False)
    >>> state = create_train_state(model, variables, optax.sgd(0.1), jax.random.key(1))
    >>> int(state.step), sorted(state.trainables), sorted(state.model_state)
    (0, ['aux', 'student'], ['batch_stats'])
    >>> int(state.replace(step=state.step + 1).step)  # immutable: replace returns a copy
    1
    >>> sorted(state.variables)  # module.apply's variables, e.g. to teach another student
    ['batch_stats', 'params']

    Weight decay on kernels only, with a mask built from the model's params:

    >>> decay_kernels = jax.tree.map(lambda x: x.ndim > 1, variables["params"])
    >>> optimizer = optax.chain(
    ...     optax.masked(optax.add_decayed_weights(5e-4), {"student": decay_kernels, "aux": False}),
    ...     optax.sgd(0.1))
    >>> state = create_train_state(model, variables, optimizer, jax.random.key(1))
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: optax.OptState
  output_tx_state: optax.OptState
  rng: jax.Array
  aux_params: dict[str, Any]
  aux_state: dict[str, Any]
  hparams: dict[str, jax.Array]

  @property
  def trainables(self) -> dict[str, Any]:
    """The pytree the optimizer updates: ``{"student": params, "aux": aux_params}``."""
    return {"student": self.params, "aux": self.aux_params}

  @property
  def variables(self) -> dict[str, Any]:
    """The student's Linen variables, ``{"params": params, **model_state}``.

    What ``module.apply`` takes, and what a step's ``teacher_vars`` takes when this student
    teaches a later one (a copy is not needed: steps never donate ``teacher_vars``). For
    models from ``kdjax.models`` and ``networks.from_linen``; an NNX student's variables
    are ``nnx.merge``'s ``params`` and ``model_state``.
    """
    return {"params": self.params, **self.model_state}


def create_train_state(student: networks.Network | Any,
                       variables: Any,
                       optimizer: optax.GradientTransformation,
                       rng: jax.Array,
                       *,
                       output_tx: optax.GradientTransformation | None = None,
                       aux_heads: Mapping[str, heads_lib.AuxHead] | None = None,
                       sample_inputs: jax.typing.ArrayLike | None = None,
                       hparams: Mapping[str, jax.typing.ArrayLike] | None = None) -> TrainState:
  """Builds the initial state of a student.

  The student's arrays are copied, so the state never aliases arrays the caller still
  holds: donating the state to a step (``donate_argnums=0``) can then never invalidate, say,
  the teacher's variables when the student starts as a copy of the teacher.

  Args:
    student: a ``kdjax.networks.Network`` or a Linen module.
    variables: the student's variables (e.g. ``module.init(...)``).
    optimizer: the optax optimizer, over ``{"student": params, "aux": aux_params}``.
    rng: a PRNG key; the state's key and the heads' initialisation are split from it.
    output_tx: the transformation of output gradients the step will use (``None``: none).
      Its ``init`` receives ``None``: its state must not depend on output shapes.
    aux_heads: name → ``kdjax.heads.AuxHead``, initialised on ``sample_inputs``' features.
    sample_inputs: a batch of inputs (only its shape and dtype matter); needed with
      ``aux_heads``.
    hparams: validated objective overrides (``Objective.overrides``).

  Returns:
    A ``TrainState`` at step 0.

  Raises:
    ValueError: if ``aux_heads`` are given without ``sample_inputs``, or an aux head is
      invalid (see ``kdjax.heads.check_heads``) or reads a feature the student does not
      sow; if the optimizer's mask or labels fit the student's params instead of
      ``{"student": params, "aux": aux_params}`` (the message says what to pass).
    TypeError: if ``student`` is neither a ``Network`` nor a model ``as_network`` accepts.

  Example: a student with a trainable projection head on its ``"pooled"`` features.

    >>> from flax import linen as nn
    >>> from kdjax import heads, models
    >>> class Projector(nn.Module):  # heads are called as module(feature, train=...)
    ...   @nn.compact
    ...   def __call__(self, x, train):
    ...     return nn.Dense(4)(x)
    >>> student = models.get("mlp_tiny", 10)
    >>> x = jnp.zeros((2, 8, 8, 1))  # [B, H, W, C]
    >>> variables = student.init(jax.random.key(0), x, train=False)
    >>> projector = heads.AuxHead(Projector(), source="pooled")
    >>> state = create_train_state(student, variables, optax.adam(1e-3), jax.random.key(1),
    ...                            aux_heads={"proj": projector}, sample_inputs=x)
    >>> state.aux_params["proj"]["Dense_0"]["kernel"].shape  # pooled is [2, 16]
    (16, 4)
    >>> create_train_state(student, variables, optax.adam(1e-3), jax.random.key(1),
    ...                    aux_heads={"proj": projector})
    Traceback (most recent call last):
    ...
    ValueError: aux heads ['proj'] need sample_inputs to be initialised.
  """
  student = networks.as_network(student)
  heads = heads_lib.check_heads(aux_heads or {})
  params, model_state = student.split(variables)
  params, model_state = jax.tree.map(lambda x: jnp.array(x, copy=True), (params, model_state))
  init_rng, state_rng = jax.random.split(rng)
  aux_params, aux_state = {}, {}
  if heads:
    if sample_inputs is None:
      raise ValueError(f"aux heads {sorted(heads)} need sample_inputs to be initialised.")
    sources = tuple(dict.fromkeys(h.source for h in heads.values()))
    features = jax.eval_shape(
        lambda p, s, x: student.apply(p, s, x, train=False, features=sources)[0],
        params, model_state, jnp.asarray(sample_inputs))
    aux_params, aux_state = heads_lib.init_heads(heads, features, init_rng)
  output_tx = output_tx or optax.identity()
  return TrainState(
      step=jnp.zeros([], jnp.int32),
      params=params,
      model_state=model_state,
      opt_state=_init_optimizer(optimizer, params, aux_params),
      output_tx_state=output_tx.init(None),
      rng=state_rng,
      aux_params=aux_params,
      aux_state=aux_state,
      hparams={k: jnp.asarray(v, jnp.float32) for k, v in (hparams or {}).items()},
  )


def _init_optimizer(optimizer: optax.GradientTransformation, params: Any,
                    aux_params: dict[str, Any]) -> optax.OptState:
  """``optimizer.init`` over the trainables, naming the fix for masks written for ``params``.

  A mask or label tree built from the model's parameters (the usual flax weight-decay
  idiom) does not match ``{"student": params, "aux": aux_params}``; optax then fails with a
  bare tree-structure error. The same optimizer initialised on ``params`` alone tells the
  two cases apart.
  """
  try:
    return optimizer.init({"student": params, "aux": aux_params})
  except (ValueError, TypeError) as error:
    try:
      jax.eval_shape(optimizer.init, params)
    except (ValueError, TypeError):
      raise error from None
    raise ValueError(
        "the optimizer's mask or labels are written for the student's params, but it acts "
        "on {'student': params, 'aux': aux_params}; wrap the tree: "
        "{'student': mask, 'aux': False} (aux heads excluded, or True to include them), or "
        "pass a callable mask such as lambda trainables: jax.tree.map(lambda x: x.ndim > 1, "
        "trainables).") from error
