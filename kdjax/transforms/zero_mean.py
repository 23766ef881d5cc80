"""Projection of logit gradients onto the zero-mean subspace (Chen et al., 2021)."""

import jax.numpy as jnp
import optax

from kdjax.transforms import _outputs


def zero_mean_logit_gradients() -> optax.GradientTransformationExtraArgs:
  r"""Removes the class-mean of the gradient with respect to the student's logits.

  .. math:: g_s \leftarrow g_s - \tfrac1K \textstyle\sum_k g_{s,k}

  Softmax-based losses already produce logit gradients that sum to zero over classes; this
  projection enforces it for any objective (e.g. raw logits matching or Annealing-KD's MSE),
  so that the mean logit never moves and, with plain SGD and a zero-mean head
  (``kdjax.initializers.zero_mean``), KD at high temperature stays exactly logits matching.

  Returns:
    A stateless ``optax.GradientTransformationExtraArgs``; ``updates`` is the logit
    gradient ``[B, K]``, or a dict of output gradients whose ``"logits"`` entry is
    projected; other entries pass through unchanged.

  Raises:
    ValueError: (from ``update``) when ``updates`` is a dict without a ``"logits"`` entry.

  Example:
    >>> tx = zero_mean_logit_gradients()
    >>> g, _ = tx.update(jnp.array([[1.0, 2.0, 3.0]]), tx.init(None))
    >>> g.tolist()
    [[-1.0, 0.0, 1.0]]
    >>> g, _ = tx.update({"logits": jnp.ones((1, 2)), "stage1": jnp.ones((1, 4))}, tx.init(None))
    >>> g["logits"].tolist(), g["stage1"].tolist()
    ([[0.0, 0.0]], [[1.0, 1.0, 1.0, 1.0]])
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    g = _outputs.get_logits(updates)
    return _outputs.replace_logits(updates, g - jnp.mean(g, axis=-1, keepdims=True)), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
