"""Hinton et al.'s distillation loss and the supervised cross-entropy it is paired with."""

import jax
import jax.numpy as jnp
import optax

from kdjax.losses import tempered
from kdjax.losses import validation as v


def kd(student_logits: jax.typing.ArrayLike,
       teacher_logits: jax.typing.ArrayLike,
       temperature: jax.typing.ArrayLike = 4.0,
       *,
       class_reduction: str = "sum") -> jax.Array:
  r"""Per-example knowledge-distillation loss of Hinton et al.

  .. math::
     L = T^2 \cdot \mathrm{KL}\big(\mathrm{softmax}(t/T)\ \|\ \mathrm{softmax}(s/T)\big),
     \qquad \frac{\partial L}{\partial s} = T\,(p_s^T - p_t^T)

  The :math:`T^2` keeps the gradient's scale constant across temperatures. The teacher is a
  constant (``stop_gradient``). As :math:`T \to \infty` the loss tends to
  ``logits_matching(s, t, centered=True)`` with error :math:`O(1/T)` (Chen et al., 2021);
  it is computed by ``tempered.tempered_kl``, which stays accurate in float32 at any T (the
  textbook form loses all precision beyond T of about 1e3).

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape.
    temperature: softmax temperature T > 0 (a scalar, possibly traced from a schedule).
    class_reduction: ``"sum"`` (the KL itself; the batch mean of it is PyTorch's
      ``batchmean``) or ``"mean"`` (divided by K: PyTorch's default ``KLDivLoss()``, used by
      the TAKD, DGKD and Annealing-KD code bases).

  Returns:
    Per-example losses ``[...]``.

  Raises:
    ValueError: on mismatched shapes, non-float logits, ``temperature <= 0`` or an unknown
      ``class_reduction``.

  References:
    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015.

  Example:
    >>> s = jnp.array([[1.0, 2.0, 3.0]])
    >>> kd(s, s).tolist()
    [0.0]
  """
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  v.check_same_shape(s, t)
  v.check_positive("temperature", temperature)
  scale = v.class_reduction_scale(class_reduction, s.shape[-1])
  t = jax.lax.stop_gradient(t)
  return scale * tempered.tempered_kl(s, t, temperature)


def cross_entropy(logits: jax.typing.ArrayLike,
                  labels: jax.typing.ArrayLike,
                  *,
                  label_smoothing: float = 0.0) -> jax.Array:
  r"""Per-example softmax cross-entropy with integer labels (optionally smoothed).

  .. math::
     L = -\textstyle\sum_k q_k \log \mathrm{softmax}(s)_k,\qquad
     q = (1-\alpha)\,\mathrm{onehot}(y) + \alpha/K

  Args:
    logits: ``[..., K]``.
    labels: integer class indices ``[...]``.
    label_smoothing: :math:`\alpha \in [0, 1)`.

  Returns:
    Per-example losses ``[...]``.

  Raises:
    ValueError: on missing (``None``) or non-integer labels, labels whose shape is not the
      logits' batch shape, labels outside ``[0, K)`` (when concrete), or ``label_smoothing``
      outside ``[0, 1)``.

  Example:
    >>> round(float(cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))[0]), 4)  # log 4
    1.3863
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels) if labels is not None else None
  v.check_logits("logits", logits)
  v.check_labels(labels, logits)
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing={label_smoothing} must lie in [0, 1).")
  if label_smoothing == 0.0:
    return optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.losses.softmax_cross_entropy(logits, targets)
