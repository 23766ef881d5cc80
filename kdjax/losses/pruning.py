r"""Dark Knowledge Pruning (DKP): a term added to KD that lowers its built-in regularization.

The thesis that introduced DKP (Mohammed & Gizachew, AAU, 2023) says that the distillation
loss is both a regularizer and a carrier of dark knowledge, and that DKP adds a term which
lowers the regularization; its exact formula is not public. kdjax ships three principled
readings, each an additive term of strength :math:`\gamma \in [0, 1]` (``gamma=0`` is plain
KD exactly):

``"uniform"`` (default)
  The tempered teacher always contains a uniform floor: with
  :math:`\varepsilon = K \min_k p^T_{t,k}`, :math:`p_t^T = \varepsilon u + (1-\varepsilon)\hat p_t`.
  Cross-entropy is linear in its target, so KD contains :math:`\varepsilon H(u, p_s^T)`,
  a label-smoothing regularizer carrying no class information. DKP removes it:

  .. math:: \Delta L = -\gamma\, T^2\, \mathrm{sg}(\varepsilon)\, H(u, p_s^T),
     \qquad H(u, q) = -\tfrac1K \textstyle\sum_k \log q_k.

  At :math:`\gamma = 1` the student distils toward the pruned teacher :math:`\hat p_t`, with
  gradient :math:`T(1-\varepsilon)(p_s^T - \hat p_t)`.

``"mean"``
  Cancels Chen et al.'s extra regularizer of KD at high temperature:

  .. math:: \Delta L = +\gamma\,\tfrac12\,(\bar s - \mathrm{sg}(\bar t))^2.

``"tail"``
  By the chain rule of KL over the blocks {y}, S (the teacher's ``top_k`` non-target
  classes) and R (the rest), :math:`\mathrm{KL} = \mathrm{KL}(\text{block masses}) +
  P(S)\,\mathrm{KL}(P_{|S}\|Q_{|S}) + P(R)\,\mathrm{KL}(P_{|R}\|Q_{|R})`. DKP drops the shape
  of the tail, keeping its mass:

  .. math:: \Delta L = -\gamma\, T^2\, \mathrm{sg}(P_t(R))\, \mathrm{KL}(P_{t|R}\ \|\ P_{s|R}).
"""

import jax
import jax.numpy as jnp

from kdjax.losses import tempered
from kdjax.losses import validation as v

VARIANTS = ("uniform", "mean", "tail")


def check_arguments(temperature, gamma, variant: str, top_k: int | None,
                    num_classes: int | None = None) -> None:
  """Validates DKP's hyperparameters (shared by the loss and the optax transformation).

  ``dkp`` calls it on every call; objectives and ``kdjax.transforms.dkp`` call it when they
  are built (with placeholder ``temperature=1.0, gamma=0.0`` and no ``num_classes``: their
  temperatures and gammas may be schedules, range-checked separately). Traced
  ``temperature`` and ``gamma`` values are not checked.

  Args:
    temperature: T, must be finite and > 0.
    gamma: strength, must lie in ``[0, 1]``.
    variant: ``"uniform"``, ``"mean"`` or ``"tail"``.
    top_k: ``"tail"`` only: an integer ``>= 1`` (and ``<= K - 2`` when ``num_classes`` is
      given); ignored by the other variants.
    num_classes: K, when known, to check that ``top_k`` leaves a non-empty tail.

  Raises:
    ValueError: naming the bad value: an unknown ``variant``, ``temperature <= 0``,
      ``gamma`` outside ``[0, 1]``, or a ``"tail"`` ``top_k`` that is missing, not an
      integer, below 1 or above ``K - 2``.

  Example:
    >>> check_arguments(4.0, 0.5, "tail", top_k=3, num_classes=10)  # valid: returns None
    >>> check_arguments(4.0, 0.5, "tail", top_k=None)
    Traceback (most recent call last):
    ...
    ValueError: DKP variant 'tail' needs an integer top_k >= 1; got top_k=None.
    >>> check_arguments(4.0, 1.5, "uniform", top_k=None)
    Traceback (most recent call last):
    ...
    ValueError: gamma=1.5 must lie in [0.0, 1.0].
  """
  v.check_choice("DKP variant", variant, VARIANTS)
  v.check_positive("temperature", temperature)
  v.check_in_range("gamma", gamma, 0.0, 1.0)
  if variant == "tail":
    if top_k is None or isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
      raise ValueError(f"DKP variant 'tail' needs an integer top_k >= 1; got top_k={top_k!r}.")
    if num_classes is not None and top_k > num_classes - 2:
      raise ValueError(
          f"top_k={top_k} leaves no tail with K={num_classes} classes: "
          f"top_k must be at most K - 2 = {num_classes - 2}.")


def dkp(student_logits: jax.typing.ArrayLike,
        teacher_logits: jax.typing.ArrayLike,
        temperature: jax.typing.ArrayLike,
        gamma: jax.typing.ArrayLike,
        variant: str = "uniform",
        labels: jax.typing.ArrayLike | None = None,
        top_k: int | None = None) -> jax.Array:
  r"""Per-example DKP term, to be **added** to ``kd(student, teacher, temperature)``.

  Use it with a ``kd`` term to lower KD's built-in regularization while keeping its dark
  knowledge; see the module docstring for the reasoning behind the three variants. With
  ``class_reduction="mean"`` on the KD side, scale this term by 1/K too. The teacher is a
  constant (``stop_gradient``), so :math:`\mathrm{sg}` applies to every teacher quantity:

  .. math::
     \Delta L = \gamma \cdot \begin{cases}
       -T^2\, \varepsilon\, H(u, p_s^T) & \texttt{"uniform"} \\
       \tfrac12\, (\bar s - \bar t)^2 & \texttt{"mean"} \\
       -T^2\, P_t(R)\, \mathrm{KL}(P_{t|R}\ \|\ P_{s|R}) & \texttt{"tail"}
     \end{cases}

  with :math:`p^T = \mathrm{softmax}(\cdot / T)`, :math:`\varepsilon = K \min_k p^T_{t,k}`
  (``uniform_floor``), :math:`H(u, q) = -\tfrac1K \sum_k \log q_k`,
  :math:`\bar s = \tfrac1K \sum_k s_k`, R the classes other than the label y and the
  teacher's ``top_k`` largest non-target logits, :math:`P_t(R) = \sum_{k \in R} p^T_{t,k}`
  and :math:`P_{\cdot|R}` the tempered softmax renormalised over R.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[..., K]``, same shape; treated as a constant.
    temperature: T > 0, the temperature of the KD term this accompanies.
    gamma: strength :math:`\gamma \in [0, 1]`; 0 gives exactly 0.
    variant: ``"uniform"``, ``"mean"`` or ``"tail"``.
    labels: integer labels ``[...]``; needed by ``"tail"`` only.
    top_k: number of the teacher's leading non-target classes kept in full; ``"tail"`` only,
      ``1 <= top_k <= K - 2``.

  Returns:
    Per-example terms ``[...]`` (may be negative: DKP *removes* part of KD).

  Raises:
    ValueError: on mismatched shapes, ``temperature <= 0``, ``gamma`` outside [0, 1], an
      unknown variant, or ``"tail"`` without valid labels and ``top_k``.

  Example:
    >>> s, t = jnp.array([[0.0, 1.0, 2.0]]), jnp.zeros((1, 3))
    >>> float(dkp(s, t, temperature=4.0, gamma=0.0)[0]) == 0.0  # gamma = 0: plain KD
    True
    >>> dkp(s, t, temperature=4.0, gamma=1.0, variant="mean").tolist()
    [0.5]

    A uniform teacher is all floor (:math:`\varepsilon = 1`): at ``gamma=1`` DKP cancels
    KD's whole gradient.

    >>> from kdjax.losses.hinton import kd
    >>> total = lambda s: jnp.sum(kd(s, t, 4.0) + dkp(s, t, 4.0, gamma=1.0))
    >>> bool(jnp.allclose(jax.grad(total)(s), 0.0, atol=1e-6))
    True
    >>> s4, t4 = jnp.array([[0.0, 1.0, 2.0, 3.0]]), jnp.array([[3.0, 2.0, 1.0, 0.0]])
    >>> dkp(s4, t4, 1.0, 1.0, "tail", labels=jnp.array([0]), top_k=1).shape
    (1,)
    >>> dkp(s4, t4, 1.0, 1.0, "tail", labels=jnp.array([0]), top_k=3)
    Traceback (most recent call last):
    ...
    ValueError: top_k=3 leaves no tail with K=4 classes: top_k must be at most K - 2 = 2.
  """
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  v.check_same_shape(s, t)
  check_arguments(temperature, gamma, variant, top_k, s.shape[-1])
  t = jax.lax.stop_gradient(t)
  if variant == "uniform":
    return gamma * _uniform(s, t, temperature)
  if variant == "mean":
    return gamma * 0.5 * (jnp.mean(s, axis=-1) - jnp.mean(t, axis=-1))**2
  labels = jnp.asarray(labels) if labels is not None else None
  v.check_labels(labels, s)
  return gamma * _tail(s, t, temperature, labels, top_k)


def uniform_floor(teacher_logits: jax.Array, temperature) -> jax.Array:
  r"""The weight :math:`\varepsilon` of the uniform floor in the tempered teacher.

  The ``"uniform"`` variant of ``dkp`` removes :math:`\varepsilon\,H(u, p_s^T)` from KD; use
  this to log how much of the teacher's tempered distribution is that class-free floor
  (it grows with the temperature).

  .. math::
     \varepsilon = K \min_k p^T_{t,k} \in (0, 1],\qquad
     p_t^T = \mathrm{softmax}(t / T) = \varepsilon\, u + (1 - \varepsilon)\, \hat p_t

  with :math:`u = \tfrac1K \mathbf 1` the uniform distribution and :math:`\hat p_t` the
  pruned teacher (zero on its least likely class). Its size depends on how spread the
  teacher's logits are, which is an assumption about the teacher, not a property of DKP:
  for 100 classes and Gaussian logits of standard deviation 2.2, :math:`\varepsilon`
  averages 0.22 at T = 4 and 0.48 at T = 8 (0.52 and 0.73 with standard deviation 1); a
  confident teacher, with logits spread over tens, has :math:`\varepsilon` near 0.

  Args:
    teacher_logits: ``[..., K]``.
    temperature: T > 0 (not validated here).

  Returns:
    :math:`\varepsilon`, ``[...]``; 1 for a uniform teacher.

  Example:
    >>> uniform_floor(jnp.zeros((2, 5)), 4.0).tolist()
    [1.0, 1.0]
    >>> t = jnp.array([[0.0, 0.0, 4.0 * np.log(3.0)]])  # tempered probabilities 1:1:3
    >>> round(float(uniform_floor(t, 4.0)[0]), 4)  # 3 * 1/5
    0.6
  """
  num_classes = teacher_logits.shape[-1]
  return num_classes * jnp.min(jax.nn.softmax(teacher_logits / temperature), axis=-1)


def _uniform(s: jax.Array, t: jax.Array, temperature) -> jax.Array:
  eps = jax.lax.stop_gradient(uniform_floor(t, temperature))
  cross_entropy_to_uniform = -jnp.mean(jax.nn.log_softmax(s / temperature), axis=-1)
  return -temperature**2 * eps * cross_entropy_to_uniform


def _tail(s: jax.Array, t: jax.Array, temperature, labels: jax.Array, top_k: int) -> jax.Array:
  num_classes = s.shape[-1]
  target = jax.nn.one_hot(labels, num_classes, dtype=bool)
  # The teacher's top_k non-target classes form S; R is everything else but the target.
  ranked = jnp.where(target, -jnp.inf, t)
  _, top_indices = jax.lax.top_k(ranked, top_k)
  in_s = jnp.any(jax.nn.one_hot(top_indices, num_classes, dtype=bool), axis=-2)
  in_r = ~(target | in_s)
  kl_r = tempered.kl_of_logit_shift(t / temperature, (t - s) / temperature, where=in_r)
  mass_r = jnp.sum(jnp.where(in_r, jax.nn.softmax(t / temperature), 0.0), axis=-1)
  return -temperature**2 * mass_r * kl_r
