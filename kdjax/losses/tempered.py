r"""KL divergence between tempered softmaxes, accurate in float32 at any temperature.

Every loss built on :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T))`
(KD, DKD, DGKD, ensembles, DKP's tail) computes its KL here. The textbook form
:math:`\sum_k p_k(\log p_k - \log q_k)` subtracts two log-probabilities that agree to
:math:`O(1/T)`, so its value is :math:`O(1/T^2)` left after a cancellation of :math:`O(1)`
numbers: multiplied by :math:`T^2`, float32's rounding error grows like :math:`T^2\epsilon`
(at T = 1e4 the value is off by a factor of 25, at 1e5 it is negative). Here the KL is
written in terms of the logit shift :math:`\delta = a - b` between the target's logits
:math:`a` and the model's :math:`b` (:math:`\delta = (t - s)/T` for KD). With
:math:`p = \mathrm{softmax}(a)` and :math:`\delta' = \delta - \sum_k p_k \delta_k`,

.. math::
   \mathrm{KL}(p\,\|\,\mathrm{softmax}(a - \delta))
   = \log \textstyle\sum_k p_k e^{-\delta'_k}
   = \mathrm{log1p}\Big(\textstyle\sum_k p_k\, g(\delta'_k)\Big),\qquad
   g(x) = e^{-x} - 1 + x \ge 0,

since :math:`\sum_k p_k \delta'_k = 0`. Every summand is non-negative and :math:`g` is
evaluated from its Taylor series near 0, so no step cancels: the float32 value stays within
float32 precision (relative) of the exact one for every T, and :math:`T^2\,\mathrm{KL}` tends
to centered logits matching, :math:`\tfrac{1}{2K}\lVert(s - \bar s) - (t - \bar t)\rVert^2`,
as :math:`T \to \infty` (Chen et al., 2021). Keeping the first-order term (even through
``expm1``) is not enough: it still leaves errors of several percent at large T.
"""

import jax
import jax.numpy as jnp

# Below this |x|, g(x) = e^{-x} - 1 + x comes from its Taylor series (truncation error
# x^8/8! relative to x^2/2 is below 1e-10); above it, expm1(-x) + x loses at most a factor
# 2/|x| <= 20 ulps to cancellation.
_SERIES_BOUND = 0.1
# Above this -δ', e^{-δ'} could overflow float32 once summed; the KL is then large and the
# log-sum-exp form loses nothing.
_OVERFLOW_BOUND = 50.0


def _exp_remainder(x: jax.Array) -> jax.Array:
  """``g(x) = exp(-x) - 1 + x`` without cancellation near 0."""
  small = jnp.abs(x) < _SERIES_BOUND
  xs = jnp.where(small, x, 0.0)
  series = xs**2 * (1 / 2 - xs * (1 / 6 - xs * (1 / 24 - xs * (1 / 120 - xs * (
      1 / 720 - xs / 5040)))))
  return jnp.where(small, series, jnp.expm1(-x) + x)


def _centered_shift(p: jax.Array, shift: jax.Array, where: jax.Array | None) -> jax.Array:
  """``δ' = δ - Σ_k p_k δ_k``: the shift with zero mean under ``p`` (0 off ``where``)."""
  centered = shift - jnp.sum(p * shift, axis=-1, keepdims=True)
  if where is not None:
    centered = jnp.where(where, centered, 0.0)
  return centered


def kl_of_logit_shift(target_logits: jax.Array,
                      shift: jax.Array,
                      *,
                      where: jax.Array | None = None) -> jax.Array:
  r"""Per-example :math:`\mathrm{KL}(\mathrm{softmax}(a)\,\|\,\mathrm{softmax}(a - \delta))`.

  Use it when the two distributions' logits are known as a target and a shift that is
  computed directly (for KD, :math:`a = t/T` and :math:`\delta = (t - s)/T`): the result is
  accurate to float32 precision however small the shift. ``tempered_kl`` wraps it for the
  common case.

  .. math::
     \mathrm{KL} = \mathrm{log1p}\Big(\textstyle\sum_k p_k\, g(\delta'_k)\Big),\quad
     p = \mathrm{softmax}(a),\quad \delta' = \delta - \textstyle\sum_j p_j\delta_j,\quad
     g(x) = e^{-x} - 1 + x

  (and :math:`\log\sum_k p_k e^{-\delta'_k}` by log-sum-exp when some
  :math:`-\delta'_k > 50`, where :math:`e^{-\delta'}` could overflow).

  Args:
    target_logits: :math:`a`, ``[..., K]``; only differences along the last axis matter.
    shift: :math:`\delta`, ``[..., K]``, broadcastable with ``target_logits``.
    where: optional boolean ``[..., K]``: both distributions are restricted to (and
      renormalised over) the classes marked True; each example needs at least one.

  Returns:
    Per-example KL ``[...]``, >= 0. No input is checked.

  Example:
    >>> a = jnp.array([[1.0, 2.0, 3.0]])
    >>> kl_of_logit_shift(a, jnp.full((1, 3), 7.0)).tolist()  # a constant shift: no change
    [0.0]
    >>> b = jnp.array([[0.0, 2.0, 1.0]])
    >>> exact = optax.losses.kl_divergence_with_log_targets(jax.nn.log_softmax(b),
    ...                                                     jax.nn.log_softmax(a))
    >>> bool(jnp.allclose(kl_of_logit_shift(a, a - b), exact))
    True
  """
  target_logits, shift = jnp.broadcast_arrays(target_logits, shift)
  if where is not None:
    shift = jnp.where(where, shift, 0.0)
  p = jax.nn.softmax(target_logits, where=where)
  if where is not None:
    p = jnp.where(where, p, 0.0)
  centered = _centered_shift(p, shift, where)
  overflow = jnp.max(-centered, axis=-1, keepdims=True) > _OVERFLOW_BOUND
  bounded = jnp.where(overflow, 0.0, centered)
  near = jnp.log1p(jnp.sum(p * _exp_remainder(bounded), axis=-1))
  log_p = jax.nn.log_softmax(target_logits, where=where)
  terms = jnp.where(overflow, log_p - centered, 0.0)
  if where is not None:
    terms = jnp.where(where, terms, -jnp.inf)
  far = jax.nn.logsumexp(terms, axis=-1)
  return jnp.where(overflow[..., 0], far, near)


def log_ratio_of_logit_shift(target_logits: jax.Array, shift: jax.Array) -> jax.Array:
  r"""Per-class :math:`\lambda = \log\mathrm{softmax}(a - \delta) - \log\mathrm{softmax}(a)`.

  The log-ratio of the model's probabilities to the target's, class by class, for divergences
  that are not a KL of the two (Jensen–Shannon, total variation). Subtracting the two
  log-softmaxes cancels :math:`O(1)` numbers to leave :math:`O(\delta)`; here

  .. math::
     \lambda_k = -\delta'_k - \mathrm{KL}\big(\mathrm{softmax}(a)\,\|\,
     \mathrm{softmax}(a - \delta)\big),\qquad
     \delta' = \delta - \textstyle\sum_j p_j\delta_j,\quad p = \mathrm{softmax}(a)

  (since :math:`q_k/p_k = e^{-\delta'_k} / \sum_j p_j e^{-\delta'_j}` and the KL is the log of
  that normaliser), so its absolute error is :math:`O(\epsilon \max_k|\delta_k|)`: relative
  precision for shifts of any size.

  Args:
    target_logits: :math:`a`, ``[..., K]``.
    shift: :math:`\delta`, ``[..., K]``, broadcastable with ``target_logits``.

  Returns:
    :math:`\lambda`, ``[..., K]``; :math:`\sum_k p_k e^{\lambda_k} = 1`. No input is checked.

  Example:
    >>> a, b = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[0.0, 2.0, 1.0]])
    >>> textbook = jax.nn.log_softmax(b) - jax.nn.log_softmax(a)
    >>> bool(jnp.allclose(log_ratio_of_logit_shift(a, a - b), textbook, atol=1e-6))
    True
  """
  target_logits, shift = jnp.broadcast_arrays(target_logits, shift)
  centered = _centered_shift(jax.nn.softmax(target_logits), shift, None)
  return -centered - kl_of_logit_shift(target_logits, shift)[..., None]


def tempered_kl(student_logits: jax.Array,
                teacher_logits: jax.Array,
                temperature: jax.typing.ArrayLike,
                *,
                where: jax.Array | None = None) -> jax.Array:
  r"""Per-example :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T))`.

  The primitive of every tempered distillation loss: ``kd`` is this, scaled by the class
  reduction. Accurate in float32 for every T (see the module docstring); its gradient with
  respect to the student is :math:`T\,(p_s^T - p_t^T)`, and it tends to centered logits
  matching as :math:`T \to \infty`.

  .. math::
     L = T^2\,\mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T)\big)
       = T^2\,\mathrm{log1p}\Big(\textstyle\sum_k p_{t,k}\, g(\delta'_k)\Big),\qquad
     \delta = \frac{t - s}{T}

  Args:
    student_logits: :math:`s`, ``[..., K]``.
    teacher_logits: :math:`t`, ``[..., K]`` (broadcastable). Not ``stop_gradient``-ed here.
    temperature: T > 0, a scalar (possibly traced).
    where: optional boolean ``[..., K]``: restrict both softmaxes to the marked classes.

  Returns:
    Per-example losses ``[...]``. No input is checked (the losses check theirs).

  Example:
    >>> s, t = jnp.array([[0.3, -1.2, 0.9]]), jnp.array([[1.0, 0.5, -2.0]])
    >>> from kdjax.losses.matching import logits_matching
    >>> limit = logits_matching(s, t, centered=True)  # the T -> infinity limit
    >>> bool(jnp.allclose(tempered_kl(s, t, 1e6), limit, rtol=1e-4))
    True
  """
  return temperature**2 * kl_of_logit_shift(
      teacher_logits / temperature, (teacher_logits - student_logits) / temperature,
      where=where)


def log_mean_exp(x: jax.Array, axis: int, *, where: jax.Array | None = None) -> jax.Array:
  r""":math:`\log \frac1n \sum_i e^{x_i}` along ``axis``, accurate near 0.

  The absolute error is :math:`O(\epsilon \max_i |x_i|)`.

  Log-sum-exp rounds at the scale of :math:`\log n`; near 0 this form rounds at the scale of
  the inputs, which keeps mixtures of tempered distributions (``ensemble_kd``) and the tail
  bucket of sparse targets (``sparse_kd``) exact to :math:`O(\epsilon/T)`, as their KL needs.

  .. math::
     \log \tfrac1n \textstyle\sum_i e^{x_i} = \mathrm{log1p}\big(\tfrac1n \sum_i
     \mathrm{expm1}(x_i)\big) \quad (\max_i |x_i| \le 1)

  Args:
    x: ``[...]``.
    axis: the axis averaged over, of length n; it is kept with size 1.
    where: optional boolean, broadcastable with ``x``: average over the marked elements only
      (n of them, at least one per slice).

  Returns:
    ``[...]`` with ``axis`` of size 1.

  Example:
    >>> round(float(log_mean_exp(jnp.array([0.0, jnp.log(3.0)]), axis=-1)[0]), 4)  # log 2
    0.6931
    >>> x = jnp.array([0.0, jnp.log(3.0), 50.0])
    >>> round(float(log_mean_exp(x, -1, where=jnp.array([True, True, False]))[0]), 4)
    0.6931
  """
  if where is None:
    where = jnp.ones(x.shape, bool)
  where = jnp.broadcast_to(where, x.shape)
  x = jnp.where(where, x, 0.0)
  count = jnp.sum(where, axis=axis, keepdims=True).astype(x.dtype)
  small = jnp.max(jnp.abs(x), axis=axis, keepdims=True) <= 1.0
  near = jnp.log1p(jnp.sum(jnp.expm1(jnp.where(small, x, 0.0)), axis=axis, keepdims=True)
                   / count)
  far = jax.nn.logsumexp(x, axis=axis, keepdims=True, where=where) - jnp.log(count)
  return jnp.where(small, near, far)
