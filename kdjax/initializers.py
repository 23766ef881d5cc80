"""Equal-mean initialization of a classifier head (Chen et al., 2021).

Every softmax-based loss has a logit gradient that sums to zero over classes, so plain SGD
never moves the class-mean of the last layer's weights and bias. Starting teacher and
student from a head whose class-mean is zero therefore keeps the mean logit at zero for the
whole run, and KD at T → ∞ becomes exactly logits matching: the extra regularizer
:math:`-\\tfrac12(\\bar s - \\bar t)^2` vanishes.
"""

from flax import linen as nn
import jax
import jax.numpy as jnp

_LECUN_NORMAL = nn.initializers.lecun_normal()


def zero_mean(base_init: jax.nn.initializers.Initializer = _LECUN_NORMAL,
              axis: int = -1) -> jax.nn.initializers.Initializer:
  r"""Wraps an initializer so that its output has zero mean along the class ``axis``.

  .. math::
     W \leftarrow W - \tfrac{1}{K}\textstyle\sum_k W_{\cdot k}

  Use it as the ``kernel_init`` of a classifier's final ``nn.Dense`` (whose bias starts at
  zero), for teacher and student alike.

  Args:
    base_init: the initializer to centre, e.g. ``nn.initializers.lecun_normal()``.
    axis: the class axis of the parameter (``-1`` for a Dense kernel ``[features, K]``).

  Returns:
    An initializer ``(key, shape, dtype) -> Array`` whose output sums to zero along ``axis``.

  Example:
    >>> import jax, flax.linen as nn
    >>> head = nn.Dense(10, kernel_init=zero_mean())
    >>> params = head.init(jax.random.key(0), jax.numpy.ones((1, 4)))
    >>> bool(abs(params["params"]["kernel"].mean(axis=-1)).max() < 1e-6)
    True
  """

  def init(key, shape, dtype=jnp.float32):
    w = base_init(key, shape, dtype)
    return w - jnp.mean(w, axis=axis, keepdims=True)

  return init
