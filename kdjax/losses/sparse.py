"""Sparse teacher targets: the teacher's top-k probabilities plus one tail bucket."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.losses import tempered
from kdjax.losses import validation as v


class SparseTargets(NamedTuple):
  r"""A teacher's tempered distribution kept as its k most probable classes and a tail.

  The k + 1 outcomes "class j" (j in the top k, S) and "any other class" have the logits
  :math:`t_j` and :math:`u + T\log(K - k)`, where the tail logit
  :math:`u = T \log \frac{1}{K-k} \sum_{i \notin S} e^{t_i/T}` is a soft mean of the other
  logits: their probabilities at T are the softmax of these logits over T. Logits, not
  log-probabilities, because a log-probability holds the normaliser
  :math:`\log \sum_k e^{t_k/T} \approx \log K` and rounds at that scale, while
  the differences between classes are :math:`O(1/T)`: at large T they would be lost.

  Build it with :func:`sparse_targets` (or ``kdjax.teacher_cache.sparsify``, for a whole
  dataset in compact dtypes); read it with :func:`sparse_kd`.

  Attributes:
    indices: the teacher's top-k classes ``[..., k]``, most probable first (any integer
      dtype).
    logits: the teacher's logits at those classes ``[..., k]``.
    tail_logit: :math:`u` at the temperature the targets were made for ``[...]``
      (``-inf`` when k = K).

  Example:
    >>> targets = sparse_targets(jnp.array([[3.0, 1.0, 2.0, 0.0]]), k=2, temperature=1.0)
    >>> targets.indices.tolist(), targets.logits.tolist()
    ([[0, 2]], [[3.0, 2.0]])
    >>> round(float(targets.tail_logit[0]), 4)  # log((e¹ + e⁰) / 2)
    0.6201
  """

  indices: jax.Array
  logits: jax.Array
  tail_logit: jax.Array


def check_k(k, num_classes: int | None) -> None:
  """Refuses a ``k`` that is not an integer in ``[1, K]``.

  The one check of ``k`` (the ``sparse_kd`` method's and loss term's ``top_k``), before K
  is known (``num_classes=None``: an objective is built) and once it is (a run's dataset,
  the logits' width).

  Args:
    k: the number of classes kept.
    num_classes: K, or ``None`` when it is not known yet (then only ``k >= 1`` is checked).

  Raises:
    ValueError: naming ``k`` and K.

  Example:
    >>> check_k(10, 100)  # valid: returns None
    >>> check_k(0, 100)
    Traceback (most recent call last):
    ...
    ValueError: k=0 must be an integer in [1, K] = [1, 100].
    >>> check_k(0, None)
    Traceback (most recent call last):
    ...
    ValueError: k=0 must be an integer in [1, K], K the number of classes.
  """
  high = num_classes or float("inf")
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= high:
    where = f" = [1, {num_classes}]" if num_classes is not None else ", K the number of classes"
    raise ValueError(f"k={k!r} must be an integer in [1, K]{where}.")


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
  r"""Keeps the teacher's k most probable classes and one tail bucket, at temperature T.

  .. math::
     S = \mathrm{top}_k(t),\qquad
     u = T \log \tfrac{1}{K-k} \textstyle\sum_{i \notin S} e^{t_i/T}

  (``tempered.log_mean_exp``, which keeps :math:`u` exact at any T). A cache of these is k/K
  of the dense logits' values, plus the indices.

  Args:
    teacher_logits: ``[..., K]``.
    k: classes kept, an integer in ``[1, K]``.
    temperature: T > 0, the temperature the targets are for (the tail logit is tied to it).

  Returns:
    ``SparseTargets`` with ``indices`` (int32) and ``logits`` ``[..., k]`` and ``tail_logit``
    ``[...]``.

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
  num_classes = t.shape[-1]
  check_k(k, num_classes)
  v.check_positive("temperature", temperature)
  t = jax.lax.stop_gradient(t)
  logits, indices = jax.lax.top_k(t, k)
  if k == num_classes:
    tail_logit = jnp.full(t.shape[:-1], -jnp.inf, t.dtype)
  else:
    tail_logit = temperature * _tail_log_mean_exp(t / temperature, indices)
  return SparseTargets(indices.astype(jnp.int32), logits, tail_logit)


def _tail_log_mean_exp(x: jax.Array, indices: jax.Array) -> jax.Array:
  """``log mean exp`` of ``x [..., K]`` over the classes not in ``indices [..., k]``."""
  kept = jnp.any(jax.nn.one_hot(indices, x.shape[-1], dtype=bool), axis=-2)
  return tempered.log_mean_exp(x, axis=-1, where=~kept)[..., 0]


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
  different orders).

  It is computed as ``kd`` is (``tempered.kl_of_logit_shift``), from the logit shifts
  :math:`(t_j - s_j)/T` and :math:`(u_t - u_s)/T` between the outcomes' logits, the
  student's tail logit :math:`u_s` made like the teacher's (see :class:`SparseTargets`): exact
  in float32 at any T, where the differences of log-probabilities would cancel.

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
  t_top = jax.lax.stop_gradient(jnp.asarray(targets.logits, s.dtype))
  t_tail = jax.lax.stop_gradient(jnp.asarray(targets.tail_logit, s.dtype))
  num_classes, k = s.shape[-1], indices.shape[-1]
  if indices.shape != (*s.shape[:-1], k) or t_top.shape != indices.shape or (
      t_tail.shape != s.shape[:-1]):
    raise ValueError(f"sparse targets of shapes indices {indices.shape}, logits "
                     f"{t_top.shape}, tail_logit {t_tail.shape} do not fit student logits "
                     f"{s.shape}: expected [..., k], [..., k] and [...] with [...] = "
                     f"{s.shape[:-1]}.")
  check_k(k, num_classes)
  _check_indices(v.concrete_value(indices), num_classes)
  indices = indices.astype(jnp.int32)
  s_top = jnp.take_along_axis(s, indices, axis=-1)
  target, shift = t_top / temperature, (t_top - s_top) / temperature
  if k < num_classes:
    s_tail = temperature * _tail_log_mean_exp(s / temperature, indices)
    tail_target = t_tail / temperature + jnp.log(num_classes - k).astype(s.dtype)
    target = jnp.concatenate([target, tail_target[..., None]], axis=-1)
    shift = jnp.concatenate([shift, ((t_tail - s_tail) / temperature)[..., None]], axis=-1)
  return temperature**2 * tempered.kl_of_logit_shift(target, shift)
