"""DKP as an optax transformation of the gradient with respect to the student's logits."""

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from kdjax import losses, schedules
from kdjax.losses import pruning, validation
from kdjax.transforms import _outputs


class DKPState(NamedTuple):
  """The state of the ``dkp`` transformation: the step count of its schedules.

  Created by the transformation's ``init`` and advanced by one on every ``update``; the
  schedules given for ``temperature``, ``gamma`` and ``weight`` (not those read from the
  step's hyperparameters by name) are evaluated at ``count``. It lives in
  ``TrainState.output_tx_state``; you never build one yourself.

  Attributes:
    count: the number of updates so far, an int32 scalar ``[]``.

  Example:
    >>> tx = dkp(temperature=4.0, gamma=schedules.linear(0.0, 1.0, 100), num_steps=100)
    >>> state = tx.init(None)
    >>> type(state).__name__, int(state.count)
    ('DKPState', 0)
    >>> s = jnp.zeros((2, 3))
    >>> _, state = tx.update(jnp.zeros_like(s), state, s, teacher_logits=jnp.ones((2, 3)))
    >>> int(state.count)
    1
  """
  count: jax.Array


def dkp(temperature: schedules.ScalarOrSchedule | str,
        gamma: schedules.ScalarOrSchedule | str,
        variant: str = "uniform",
        *,
        top_k: int | None = None,
        weight: schedules.ScalarOrSchedule | str = 1.0,
        class_reduction: str = "sum",
        num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
  r"""Dark Knowledge Pruning applied to the gradient with respect to the student's logits.

  Adds the gradient of the batch-mean DKP term to the incoming logit gradient:

  .. math::
     g_s \leftarrow g_s + w\,c\,\nabla_s\,\frac{1}{\sum_i m_i}\sum_i m_i\,
     \mathrm{DKP}(s_i, t_i;\ T, \gamma)

  with :math:`c = 1` for ``class_reduction="sum"`` and :math:`c = 1/K` for ``"mean"``, so
  that an objective containing ``w · mean(kd)`` followed by this transformation gives the
  same parameter gradients as the objective ``w · mean(kd + dkp)``. Because it acts on
  output gradients it composes with ``optax.chain``, ``optax.masked`` and any optimizer; the
  step pulls the transformed gradient back through the network once.

  Use it instead of a ``dkp`` loss term to keep DKP out of the reported loss and compose it
  with other output transformations (``optax.chain``); pass it as ``output_tx`` to both
  ``kdjax.state.create_train_state`` and the step builder.

  ``temperature``, ``gamma`` and ``weight`` are each either the transformation's own
  scalar or schedule (of its own step count), or the *name* of one of the objective's
  hyperparameters, read from the ``hyperparameters`` the train step passes to ``update``
  (``kdjax.step``: the objective's resolved values at this step, per-student overrides of
  ``TrainState.hparams`` included). Name the accompanying KD term's values
  (``temperature="kd/temperature"``, ``weight="weight/kd"``) to keep DKP in step with it,
  whatever schedule or per-student override the KD term follows; name a hyperparameter the
  objective declares for it (``Objective(..., extra_hyperparameters={"dkp/gamma": ...})``)
  to sweep ``gamma`` per student (``kdjax.sweep``). An own scalar or schedule never follows
  an override.

  Args:
    temperature: T > 0 of the accompanying KD term: a scalar, a schedule, or a
      hyperparameter name such as ``"kd/temperature"``.
    gamma: strength in [0, 1]: a scalar, a schedule, or a hyperparameter name such as
      ``"dkp/gamma"``.
    variant: ``"uniform"``, ``"mean"`` or ``"tail"``; see ``kdjax.losses.dkp``.
    top_k: the ``"tail"`` variant's number of leading non-target classes.
    weight: the weight ``w`` of the KD term in the objective: a scalar, a schedule, or a
      hyperparameter name such as ``"weight/kd"``.
    class_reduction: ``"sum"`` or ``"mean"``, as the accompanying KD term.
    num_steps: the number of steps over which own schedules are validated at construction,
      required with one (named hyperparameters are validated by the objective that
      declares them).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update(updates, state, params, *,
    teacher_logits, labels=None, mask=None, hyperparameters=None)`` takes ``params`` = the
    student's outputs (the logits, or a dict with ``"logits"``), ``teacher_logits``
    ``[B, K]`` and, for ``"tail"``, integer ``labels`` ``[B]``; ``mask`` ``[B]`` marks real
    examples; ``hyperparameters`` maps names to scalars (needed when an argument is a name).

  Raises:
    ValueError: on a temperature or gamma out of range (or a non-finite weight) anywhere in
      ``[0, num_steps)``, an own schedule without ``num_steps``, an empty hyperparameter
      name, an unknown variant or class
      reduction, or ``"tail"`` without a valid ``top_k``. ``update`` raises it without
      ``params``, when a named hyperparameter is missing from ``hyperparameters`` (naming
      it), and on the same checks as ``kdjax.losses.dkp`` (shapes, labels,
      ``top_k <= K - 2``).

  Example:
    >>> tx = dkp(temperature=4.0, gamma=0.5)
    >>> s, t = jnp.zeros((2, 3)), jnp.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> g, _ = tx.update(jnp.zeros_like(s), tx.init(s), s, teacher_logits=t)
    >>> g.shape
    (2, 3)
    >>> mean_dkp = lambda s: losses.reduce_mean(losses.dkp(s, t, 4.0, 0.5))
    >>> bool(jnp.allclose(g, jax.grad(mean_dkp)(s)))  # the gradient of the batch-mean term
    True
    >>> dkp(temperature=4.0, gamma=0.5, variant="tail")
    Traceback (most recent call last):
    ...
    ValueError: DKP variant 'tail' needs an integer top_k >= 1; got top_k=None.

    Following the step's hyperparameters by name (``kdjax.step`` passes them):

    >>> tx = dkp(temperature="kd/temperature", gamma="dkp/gamma", weight="weight/kd")
    >>> hyperparameters = {"kd/temperature": 4.0, "dkp/gamma": 0.5, "weight/kd": 1.0}
    >>> g_named, _ = tx.update(jnp.zeros_like(s), tx.init(s), s, teacher_logits=t,
    ...                        hyperparameters=hyperparameters)
    >>> bool(jnp.allclose(g_named, g))  # the same as dkp(4.0, 0.5) above
    True
    >>> tx.update(jnp.zeros_like(s), tx.init(s), s, teacher_logits=t,
    ...           hyperparameters={"kd/temperature": 4.0, "weight/kd": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: dkp transformation reads gamma from hyperparameter 'dkp/gamma', which the ...
  """
  pruning.check_arguments(1.0, 0.0, variant, top_k)
  validation.check_choice("class_reduction", class_reduction, validation.CLASS_REDUCTIONS)
  bounds = {"temperature": {"low": 0.0, "low_open": True}, "gamma": {"low": 0.0, "high": 1.0},
            "weight": {}}
  arguments = {"temperature": temperature, "gamma": gamma, "weight": weight}
  for name, value in arguments.items():
    if isinstance(value, str):
      if not value:
        raise ValueError(f"{name}='' must be a scalar, a schedule or a hyperparameter name.")
    else:
      schedules.check_range(name, value, num_steps=num_steps, **bounds[name])

  def init_fn(params):
    del params
    return DKPState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, teacher_logits, labels=None, mask=None,
                hyperparameters=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("dkp transformation needs params= the student's outputs (logits).")
    logits = _outputs.get_logits(params)
    t, g, w = (_resolve(name, value, state.count, hyperparameters)
               for name, value in arguments.items())
    scale = validation.class_reduction_scale(class_reduction, logits.shape[-1])

    def mean_term(s):
      term = losses.dkp(s, teacher_logits, t, g, variant, labels=labels, top_k=top_k)
      return w * scale * losses.reduce_mean(term, mask=mask)

    grad = jax.grad(mean_term)(logits)
    new_updates = _outputs.replace_logits(updates, _outputs.get_logits(updates) + grad)
    return new_updates, DKPState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _resolve(name: str, value: schedules.ScalarOrSchedule | str, count: jax.Array,
             hyperparameters: Mapping[str, jax.Array] | None) -> jax.Array:
  """An argument's value: its own schedule at ``count``, or the named hyperparameter."""
  if not isinstance(value, str):
    return schedules.resolve(value, count)
  if hyperparameters is None or value not in hyperparameters:
    available = "none were passed" if hyperparameters is None else (
        f"available: {sorted(hyperparameters)}")
    raise ValueError(f"dkp transformation reads {name} from hyperparameter {value!r}, which "
                     f"the update did not receive ({available}); declare it in the objective "
                     f"(kdjax.step passes the objective's values as hyperparameters=).")
  return jnp.asarray(hyperparameters[value], jnp.float32)
