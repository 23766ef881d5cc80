"""Sparse teacher targets: the teacher's top-k probabilities plus one tail bucket."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.losses import validation as v


class SparseTargets(NamedTuple):
  """A teacher's tempered distribution kept as its k most probable classes and a tail.

  Build it with :func:`sparse_targets` (or ``kdjax.teacher_cache.sparsify``, for a whole
  dataset in compact dtypes); read it with :func:`sparse_kd`.

  Attributes:
    indices: the teacher's top-k classes ``[..., k]``, most probable first (any integer
      dtype).
    log_probs: their log-probabilities at the temperature the targets were made at
      ``[..., k]``.
    tail_log_prob: the log of the mass of the other K − k classes ``[...]`` (``-inf`` when
      k = K).

  Example:
    >>> targets = sparse_targets(jnp.array([[3.0, 1.0, 2.0, 0.0]]), k=2, temperature=1.0)
    >>> targets.indices.tolist()
    [[0, 2]]
    >>> mass = jnp.exp(targets.log_probs).sum(-1) + jnp.exp(targets.tail_log_prob)
    >>> bool(jnp.allclose(mass, 1.0))
    True
  """

  indices: jax.Array
  log_probs: jax.Array
  tail_log_prob: jax.Array


def check_k(k, num_classes: int) -> None:
  """Refuses a ``k`` that is not an integer in ``[1, K]``.

  Args:
    k: the number of classes kept.
    num_classes: K.

  Raises:
    ValueError: naming ``k`` and K.

  Example:
    >>> check_k(10, 100)  # valid: returns None
    >>> check_k(0, 100)
    Traceback (most recent call last):
    ...
    ValueError: k=0 must be an integer in [1, K] = [1, 100].
  """
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_classes:
    raise ValueError(f"k={k!r} must be an integer in [1, K] = [1, {num_classes}].")


def _check_indices(indices: np.ndarray | None, num_classes: int) -> None:
  """Refuses class indices ``[..., k]`` outside ``[0, K)`` or repeated within a row."""
  if indices is None or not indices.size:  # traced: values unknown
    return
  low, high = int(indices.min()), int(indices.max())
  if low < 0 or high >= num_classes:
    raise ValueError(f"sparse target indices must lie in [0, K) = [0, {num_classes}); got "
                     f"values in [{low}, {high}].")
  rows = np.sort(indices.reshape(-1, indices.shape[-1]), axis=-1)
  repeated = np.flatnonzero(np.any(rows[:, 1:] == rows[:, :-1], axis=-1))
  if repeated.size:
    row = rows[repeated[0]]
    raise ValueError(f"sparse target indices repeat a class within a row: row "
                     f"{int(repeated[0])} (flattened) holds {row.tolist()}; each of the k "
                     f"classes must be distinct.")


def sparse_targets(teacher_logits: jax.typing.ArrayLike, k: int,
                   temperature: jax.typing.ArrayLike = 4.0) -> SparseTargets:
  r"""Keeps the teacher's k most probable classes at temperature T and one tail bucket.

  .. math::
     p = \mathrm{softmax}(t/T),\qquad S = \mathrm{top}_k(p),\qquad
     p_{\text{tail}} = 1 - \textstyle\sum_{j \in S} p_j

  (the tail computed as a log-sum-exp over the classes outside S, so a tiny tail keeps its
  precision). A cache of these is k/K of the dense logits' values, plus the indices.

  Args:
    teacher_logits: ``[..., K]``.
    k: classes kept, an integer in ``[1, K]``.
    temperature: T > 0, the temperature the targets are for (a cache is tied to it).

  Returns:
    ``SparseTargets`` with ``indices`` (int32) and ``log_probs`` ``[..., k]`` and
    ``tail_log_prob`` ``[...]``.

  Raises:
    ValueError: on non-float logits, ``k`` outside ``[1, K]`` or ``temperature <= 0``.

  Example:
    >>> sparse_targets(jnp.zeros((2, 5)), k=6)
    Traceback (most recent call last):
    ...
    ValueError: k=6 must be an integer in [1, K] = [1, 5].
  """
  t = jnp.asarray(teacher_logits)
  v.check_logits("teacher_logits", t)
  check_k(k, t.shape[-1])
  v.check_positive("temperature", temperature)
  log_p = jax.nn.log_softmax(jax.lax.stop_gradient(t) / temperature)
  log_probs, indices = jax.lax.top_k(log_p, k)
  kept = jnp.sum(jax.nn.one_hot(indices, t.shape[-1], dtype=bool), axis=-2)
  tail = jax.nn.logsumexp(jnp.where(kept, -jnp.inf, log_p), axis=-1)
  return SparseTargets(indices.astype(jnp.int32), log_probs, tail)


def sparse_kd(student_logits: jax.typing.ArrayLike,
              targets: SparseTargets,
              temperature: jax.typing.ArrayLike = 4.0) -> jax.Array:
  r"""Per-example KD toward sparse teacher targets: top-k classes plus a tail bucket.

  With :math:`q = \mathrm{softmax}(s/T)` over **all** K classes (not renormalised over the
  k kept ones: the student still pays for mass it puts outside them) and
  :math:`q_{\text{tail}} = 1 - \sum_{j \in S} q_j`:

  .. math::
     L = T^2\Big(\textstyle\sum_{j \in S} p_j (\log p_j - \log q_j)
         + p_{\text{tail}}(\log p_{\text{tail}} - \log q_{\text{tail}})\Big)

  the KL between the two distributions over the k + 1 outcomes "class j" and "some other
  class". By the chain rule of KL it equals ``kd`` minus
  :math:`T^2 p_{\text{tail}}\,\mathrm{KL}(p|_{\text{tail}} \| q|_{\text{tail}})`: the
  student matches the teacher's tail mass but not its shape, which the cache no longer
  holds. At k = K the tail is empty and the loss is ``kd`` to rounding (the two sum in
  different orders and ``kd`` uses a tempered form: about 5e-7 relative in float32, 1e-15 in
  float64).

  Args:
    student_logits: ``[..., K]``.
    targets: from :func:`sparse_targets` at the same ``temperature``, with ``[..., k]``
      fields; treated as constants.
    temperature: T > 0.

  Returns:
    Per-example losses ``[...]``, >= 0.

  Raises:
    ValueError: on non-float logits, targets whose batch shape or k do not fit the logits,
      ``temperature <= 0``, or (when the indices are concrete) a class index outside
      ``[0, K)`` or repeated within a row.

  References:
    Hinton et al. 2015; the tail bucket as in MaxText's top-k distillation (PR 4056, which
    fixed the student's log-probabilities to be taken over all classes).

  Example:
    >>> from kdjax.losses import kd
    >>> s, t = jnp.array([[1.0, 2.0, 0.5, -1.0]]), jnp.array([[3.0, 0.0, 1.0, 2.0]])
    >>> dense = sparse_kd(s, sparse_targets(t, k=4, temperature=2.0), temperature=2.0)
    >>> bool(jnp.allclose(dense, kd(s, t, 2.0)))
    True
    >>> bool((sparse_kd(s, sparse_targets(t, k=2, temperature=2.0), 2.0) <= kd(s, t, 2.0)).all())
    True
  """
  s = jnp.asarray(student_logits)
  v.check_logits("student_logits", s)
  v.check_positive("temperature", temperature)
  indices = jnp.asarray(targets.indices)
  log_p = jax.lax.stop_gradient(jnp.asarray(targets.log_probs, s.dtype))
  log_p_tail = jax.lax.stop_gradient(jnp.asarray(targets.tail_log_prob, s.dtype))
  num_classes, k = s.shape[-1], indices.shape[-1]
  if indices.shape != (*s.shape[:-1], k) or log_p.shape != indices.shape or (
      log_p_tail.shape != s.shape[:-1]):
    raise ValueError(f"sparse targets of shapes indices {indices.shape}, log_probs "
                     f"{log_p.shape}, tail_log_prob {log_p_tail.shape} do not fit student "
                     f"logits {s.shape}: expected [..., k], [..., k] and [...] with [...] = "
                     f"{s.shape[:-1]}.")
  check_k(k, num_classes)
  _check_indices(v.concrete_value(indices), num_classes)
  log_q = jax.nn.log_softmax(s / temperature)
  log_q_top = jnp.take_along_axis(log_q, indices.astype(jnp.int32), axis=-1)
  kept = jnp.sum(jax.nn.one_hot(indices, num_classes, dtype=bool), axis=-2)
  # Rows with every class kept get a stand-in tail, so that no gradient meets log(0).
  tail_classes = jnp.where(kept, -jnp.inf, log_q)
  tail_classes = jnp.where(jnp.all(kept, axis=-1, keepdims=True), 0.0, tail_classes)
  log_q_tail = jax.nn.logsumexp(tail_classes, axis=-1)
  top = jnp.sum(jnp.exp(log_p) * (log_p - log_q_top), axis=-1)
  # An empty tail (k = K, or a teacher that underflows) contributes 0, not 0 · (-inf).
  has_tail = log_p_tail > -jnp.inf
  safe_p_tail = jnp.where(has_tail, log_p_tail, 0.0)
  safe_q_tail = jnp.where(has_tail, log_q_tail, 0.0)
  tail = jnp.where(has_tail, jnp.exp(safe_p_tail) * (safe_p_tail - safe_q_tail), 0.0)
  return temperature**2 * (top + tail)
