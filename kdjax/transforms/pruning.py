"""DKP as an optax transformation of the gradient with respect to the student's logits."""

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
  schedules of ``temperature``, ``gamma`` and ``weight`` are evaluated at ``count``. It lives
  in ``TrainState.output_tx_state``; you never build one yourself.

  Attributes:
    count: the number of updates so far, an int32 scalar ``[]``.

  Example:
    >>> tx = dkp(temperature=4.0, gamma=schedules.linear(0.0, 1.0, 100))
    >>> state = tx.init(None)
    >>> type(state).__name__, int(state.count)
    ('DKPState', 0)
    >>> s = jnp.zeros((2, 3))
    >>> _, state = tx.update(jnp.zeros_like(s), state, s, teacher_logits=jnp.ones((2, 3)))
    >>> int(state.count)
    1
  """
  count: jax.Array


def dkp(temperature: schedules.ScalarOrSchedule,
        gamma: schedules.ScalarOrSchedule,
        variant: str = "uniform",
        *,
        top_k: int | None = None,
        weight: schedules.ScalarOrSchedule = 1.0,
        class_reduction: str = "sum",
        num_steps: int = 1) -> optax.GradientTransformationExtraArgs:
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

  Args:
    temperature: T > 0 of the accompanying KD term (scalar or schedule).
    gamma: strength in [0, 1] (scalar or schedule).
    variant: ``"uniform"``, ``"mean"`` or ``"tail"``; see ``kdjax.losses.dkp``.
    top_k: the ``"tail"`` variant's number of leading non-target classes.
    weight: the weight ``w`` of the KD term in the objective (scalar or schedule).
    class_reduction: ``"sum"`` or ``"mean"``, as the accompanying KD term.
    num_steps: the number of steps over which schedules are validated at construction.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update(updates, state, params, *,
    teacher_logits, labels=None, mask=None)`` takes ``params`` = the student's outputs (the
    logits, or a dict with ``"logits"``), ``teacher_logits`` ``[B, K]`` and, for
    ``"tail"``, integer ``labels`` ``[B]``; ``mask`` ``[B]`` marks real examples.

  Raises:
    ValueError: on a temperature or gamma out of range (or a non-finite weight) anywhere in
      ``[0, num_steps)``, an unknown variant or class reduction, or ``"tail"`` without a
      valid ``top_k``. ``update`` raises it without ``params``, and on the same checks as
      ``kdjax.losses.dkp`` (shapes, labels, ``top_k <= K - 2``).

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
  """
  pruning.check_arguments(1.0, 0.0, variant, top_k)
  validation.check_choice("class_reduction", class_reduction, validation.CLASS_REDUCTIONS)
  schedules.check_range("temperature", temperature, low=0.0, low_open=True, num_steps=num_steps)
  schedules.check_range("gamma", gamma, low=0.0, high=1.0, num_steps=num_steps)
  schedules.check_range("weight", weight, num_steps=num_steps)

  def init_fn(params):
    del params
    return DKPState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, teacher_logits, labels=None, mask=None,
                **extra_args):
    del extra_args
    if params is None:
      raise ValueError("dkp transformation needs params= the student's outputs (logits).")
    logits = _outputs.get_logits(params)
    t = schedules.resolve(temperature, state.count)
    g = schedules.resolve(gamma, state.count)
    w = schedules.resolve(weight, state.count)
    scale = validation.class_reduction_scale(class_reduction, logits.shape[-1])

    def mean_term(s):
      term = losses.dkp(s, teacher_logits, t, g, variant, labels=labels, top_k=top_k)
      return w * scale * losses.reduce_mean(term, mask=mask)

    grad = jax.grad(mean_term)(logits)
    new_updates = _outputs.replace_logits(updates, _outputs.get_logits(updates) + grad)
    return new_updates, DKPState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
