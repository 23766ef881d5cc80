"""DIST: distillation of inter- and intra-class Pearson relations (Huang et al., NeurIPS 2022).

The inter-class relation compares each example's class distribution and is per-example. The
intra-class relation compares, for each class, its probabilities across the examples of the
batch: it couples the batch, so ``dist`` is a *batch* loss returning one scalar, and
``dist_intra_class`` takes the mask of the batch's real examples. Its "batch" is the array
it is given: under ``jax.jit`` over a device mesh that is the global batch; under
``jax.pmap`` (``kdjax.parallel.pmap_step``) it is each device's share.
"""

import jax
import jax.numpy as jnp

from kdjax.losses import validation as v

EPSILON = 1e-8  # added to the product of norms, as in the official cosine_similarity


def _norm(x: jax.Array, axis: int) -> jax.Array:
  """Euclidean norm along ``axis`` with a zero (not NaN) gradient at the zero vector."""
  squared = jnp.sum(x * x, axis=axis)
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def _pearson(a: jax.Array, b: jax.Array, where: jax.Array | None = None,
             axis: int = -1) -> jax.Array:
  """Pearson correlation along ``axis`` over the entries ``where`` selects (all by default)."""
  if where is None:
    where = jnp.ones(a.shape, bool)
  count = jnp.maximum(jnp.sum(where, axis=axis, keepdims=True), 1).astype(a.dtype)

  def centered(x):
    x = jnp.where(where, x, 0.0)  # padding, NaN or not, is left out
    return jnp.where(where, x - jnp.sum(x, axis=axis, keepdims=True) / count, 0.0)

  a, b = centered(a), centered(b)
  return jnp.sum(a * b, axis=axis) / (_norm(a, axis) * _norm(b, axis) + EPSILON)


def dist_inter_class(student_logits: jax.typing.ArrayLike,
                     teacher_logits: jax.typing.ArrayLike,
                     temperature: jax.typing.ArrayLike = 1.0) -> jax.Array:
  r"""Per-example DIST inter-class relation: one minus the Pearson correlation over classes.

  .. math::
     L_i = T^2\,\big(1 - \rho(p^T_{s,i,:},\ p^T_{t,i,:})\big),\qquad
     \rho(a, b) = \frac{(a - \bar a)\cdot(b - \bar b)}
                       {\|a - \bar a\|\,\|b - \bar b\| + 10^{-8}}

  Invariant to shifting and scaling the student's probabilities, so the student matches how
  the teacher ranks and spaces the classes, not their exact values.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    temperature: T > 0.

  Returns:
    Per-example losses ``[...]`` in ``[0, 2T²]``.

  Raises:
    ValueError: on mismatched shapes, non-float logits or ``temperature <= 0``.

  References:
    Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

  Example:
    >>> s = jnp.array([[1.0, 2.0, 3.0]])
    >>> dist_inter_class(s, s).round(6).tolist()
    [0.0]
    >>> round(float(dist_inter_class(s, -s)[0]), 4)  # reversed class order: anti-correlated
    1.8671
  """
  s, t = v.checked_pair(student_logits, teacher_logits, temperature)
  ps, pt = jax.nn.softmax(s / temperature), jax.nn.softmax(t / temperature)
  return temperature**2 * (1.0 - _pearson(ps, pt))


def dist_intra_class(student_logits: jax.typing.ArrayLike,
                     teacher_logits: jax.typing.ArrayLike,
                     temperature: jax.typing.ArrayLike = 1.0,
                     *,
                     where: jax.typing.ArrayLike | None = None) -> jax.Array:
  r"""DIST intra-class relation of a batch: one minus the mean over classes of the Pearson
  correlation across examples. A batch loss: it returns one scalar.

  .. math::
     L = T^2\Big(1 - \frac1K \textstyle\sum_k \rho\big(p^T_{s,:,k},\ p^T_{t,:,k}\big)\Big)

  with :math:`\rho` over the batch's real examples (``where``), :math:`10^{-8}` added to the
  product of norms. Every example's loss depends on the others: this is not a per-example
  loss, and a batch of one example has no relation to match (its value is :math:`T^2`).

  Args:
    student_logits: ``[B, K]`` (or ``[..., K]``: the leading axes are flattened into B).
    teacher_logits: same shape; treated as a constant.
    temperature: T > 0.
    where: optional boolean ``[B]`` (or ``[...]``); False marks padding, left out.

  Returns:
    A scalar in ``[0, 2T²]``.

  Raises:
    ValueError: on mismatched shapes, non-float logits, ``temperature <= 0`` or a ``where``
      whose shape is not the logits' batch shape.

  References:
    Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

  Example:
    >>> s = jnp.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    >>> round(float(dist_intra_class(s, s)), 4)
    0.0
  """
  s, t = v.checked_pair(student_logits, teacher_logits, temperature)
  ps, pt = jax.nn.softmax(s / temperature), jax.nn.softmax(t / temperature)
  batch_shape = ps.shape[:-1]
  if where is None:
    where = jnp.ones(batch_shape, bool)
  where = jnp.asarray(where)
  if where.shape != batch_shape:
    raise ValueError(f"where shape {where.shape} must equal the logits' batch shape "
                     f"{batch_shape}.")
  num_classes = ps.shape[-1]
  ps, pt = ps.reshape(-1, num_classes), pt.reshape(-1, num_classes)
  where = jnp.broadcast_to(where.reshape(-1, 1), ps.shape)
  return temperature**2 * (1.0 - jnp.mean(_pearson(ps, pt, where, axis=0)))


def dist(student_logits: jax.typing.ArrayLike,
         teacher_logits: jax.typing.ArrayLike,
         temperature: jax.typing.ArrayLike = 1.0,
         beta: jax.typing.ArrayLike = 1.0,
         gamma: jax.typing.ArrayLike = 1.0,
         *,
         where: jax.typing.ArrayLike | None = None) -> jax.Array:
  r"""DIST loss of a batch (a batch loss: one scalar, not per-example values).

  .. math::
     L = \beta\,\frac{1}{B}\textstyle\sum_i L^{\text{inter}}_i + \gamma\,L^{\text{intra}}

  with ``dist_inter_class`` (per-example, averaged over the real examples) and
  ``dist_intra_class`` (which couples the batch); both carry :math:`T^2`. The official code
  (``DIST`` in hunto/image_classification_sota, ``lib/models/losses/dist_kd.py``) defaults
  to :math:`\beta = \gamma = T = 1`; the paper uses :math:`\beta = \gamma = 2`, T = 4 on
  CIFAR-100, which the official CIFAR config reaches as ``DIST(1, 1, tau=4)`` weighted 2
  (``dist_cifar.yaml``, ``kd: dist_t4``, ``kd_loss_weight: 2``). DIST's objective term
  (``kdjax.methods.DIST_TERM``) spreads it as :math:`\beta L^{\text{inter}}_i + \gamma
  L^{\text{intra}}` per example, whose masked batch mean is this value.

  Args:
    student_logits: ``[B, K]`` (leading axes flattened into B).
    teacher_logits: same shape; treated as a constant.
    temperature: T > 0.
    beta: inter-class weight, finite and >= 0.
    gamma: intra-class weight, finite and >= 0.
    where: optional boolean ``[B]``; False marks padding, left out of both terms.

  Returns:
    A scalar.

  Raises:
    ValueError: as ``dist_intra_class``, or on a negative or non-finite ``beta`` or
      ``gamma``.

  References:
    Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

  Example:
    >>> s = jnp.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    >>> round(float(dist(s, s, temperature=4.0)), 3)
    0.0
    >>> dist(s, s, gamma=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: gamma=-1.0 must lie in [0.0, inf).
  """
  v.check_in_range("beta", beta, 0.0, jnp.inf)
  v.check_in_range("gamma", gamma, 0.0, jnp.inf)
  intra = dist_intra_class(student_logits, teacher_logits, temperature, where=where)
  inter = dist_inter_class(student_logits, teacher_logits, temperature)
  mask = jnp.ones(inter.shape, bool) if where is None else jnp.asarray(where)
  inter_mean = jnp.sum(jnp.where(mask, inter, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
  return beta * inter_mean + gamma * intra
