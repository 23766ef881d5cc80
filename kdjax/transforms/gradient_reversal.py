"""Gradient reversal in the update: chosen parameters ascend the loss the others descend."""

from collections.abc import Callable
from typing import Any

import optax

from kdjax import schedules


def reverse_gradients(reversal: schedules.ScalarOrSchedule,
                      mask: Any | Callable[[Any], Any]) -> optax.GradientTransformation:
  r"""Multiplies the gradient of the masked parameters by :math:`-\lambda(n)`.

  .. math::
     g_\theta \leftarrow -\lambda(n)\, g_\theta \quad (\theta \text{ masked}),\qquad
     g_\theta \text{ unchanged otherwise}

  Chained in front of the optimizer (``optax.chain(reverse_gradients(λ, mask), optimizer)``)
  it makes the masked parameters ascend the loss, scaled by :math:`\lambda(n)`, while every
  other parameter descends it: Ganin & Lempitsky's gradient-reversal layer, moved from the
  network into the update, where its schedule is a function of the update count and its
  value can be logged. CTKD (``kdjax.methods``, ``"ctkd"``) trains its temperature so; the
  optimizer's own terms (weight decay, momentum) then act on the reversed gradient, as they
  do behind a reversal layer.

  Args:
    reversal: :math:`\lambda`, a scalar or an ``optax.Schedule`` of the update count
      (0 for the first update).
    mask: a pytree of booleans with the parameters' structure (or a prefix of it), or a
      function of the parameters returning one: ``True`` marks the reversed parameters
      (``optax.masked``).

  Returns:
    An ``optax.GradientTransformation`` whose state counts the updates.

  References:
    Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015;
    Li et al., "Curriculum Temperature for Knowledge Distillation", AAAI 2023.

  Example:
    >>> params = {"student": jnp.ones(2), "temperature": jnp.ones(())}
    >>> tx = reverse_gradients(lambda n: 0.5 * n, {"student": False, "temperature": True})
    >>> state = tx.init(params)
    >>> grads = {"student": jnp.ones(2), "temperature": jnp.array(2.0)}
    >>> for _ in range(3):  # λ = 0, 0.5, 1
    ...   updates, state = tx.update(grads, state)
    >>> updates["student"].tolist(), float(updates["temperature"])
    ([1.0, 1.0], -2.0)
  """
  return optax.masked(
      optax.scale_by_schedule(lambda count: -schedules.resolve(reversal, count)), mask)
