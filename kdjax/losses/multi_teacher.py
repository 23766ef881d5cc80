"""Distillation from several teachers: DGKD's dense guidance and ensemble targets."""

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.losses import tempered
from kdjax.losses import validation as v

DROP_MODES = ("code", "paper", "none")


def _check_stack(student: jax.Array, teachers: jax.Array) -> None:
  v.check_logits("student_logits", student)
  if teachers.ndim != student.ndim + 1 or teachers.shape[1:] != student.shape:
    raise ValueError(
        f"teacher_logits must stack n teachers as [n, *student_logits.shape] = "
        f"[n, {', '.join(map(str, student.shape))}]; got {teachers.shape}.")
  if teachers.shape[0] < 1:
    raise ValueError("teacher_logits stacks no teacher (n = 0).")


def check_drop_arguments(num_teachers: int | None, mode: str, keep_prob: float, drop_num: int,
                         keep_teacher: bool = False) -> None:
  """Validates DGKD's stochastic-dropping hyperparameters.

  ``teacher_keep_mask`` (and so ``dgkd``) calls it on every call; an ``Objective`` calls it
  when it is built (``num_teachers=None``: ``drop_num``'s upper bound unchecked) and again
  once the number of teachers is known (when the step is traced), so a bad config fails
  before training. Only the argument that ``mode`` uses is checked: ``keep_prob`` for
  ``"paper"``, ``drop_num`` for ``"code"``.

  Args:
    num_teachers: ``n``, the number of teaching networks (teacher plus assistants), or
      ``None`` when it is not known yet.
    mode: ``"code"``, ``"paper"`` or ``"none"``; see ``teacher_keep_mask``.
    keep_prob: the Bernoulli keep probability, in ``(0, 1]`` (``"paper"``; skipped when
      traced).
    drop_num: the number of terms removed, an integer in ``[0, n)`` (``"code"``).
    keep_teacher: whether the teacher is exempt from dropping (``"paper"`` only).

  Raises:
    ValueError: naming the bad value: an unknown ``mode``, ``keep_prob`` outside ``(0, 1]``,
      ``drop_num`` outside ``[0, n)``, or ``keep_teacher`` not a bool or set outside
      ``"paper"`` mode.

  Example:
    >>> check_drop_arguments(3, "code", keep_prob=0.75, drop_num=2)  # valid: returns None
    >>> check_drop_arguments(3, "code", keep_prob=0.75, drop_num=3)
    Traceback (most recent call last):
    ...
    ValueError: drop_num=3 must be an integer in [0, 3) for 3 teaching networks.
    >>> check_drop_arguments(3, "paper", keep_prob=0.0, drop_num=1)
    Traceback (most recent call last):
    ...
    ValueError: keep_prob=0.0 must lie in (0.0, 1.0].
  """
  v.check_choice("DGKD drop mode", mode, DROP_MODES)
  if mode == "paper":
    v.check_in_range("keep_prob", keep_prob, 0.0, 1.0, low_open=True)
  if mode == "code":
    if isinstance(drop_num, bool) or not isinstance(drop_num, int) or drop_num < 0:
      raise ValueError(f"drop_num={drop_num!r} must be a non-negative integer.")
    if num_teachers is not None and drop_num >= num_teachers:
      raise ValueError(
          f"drop_num={drop_num!r} must be an integer in [0, {num_teachers}) for "
          f"{num_teachers} teaching networks.")
  if not isinstance(keep_teacher, bool | np.bool_):
    raise ValueError(f"keep_teacher={keep_teacher!r} must be True or False.")
  if keep_teacher and mode != "paper":
    effect = "may drop the teacher like any network" if mode == "code" else "drops none"
    raise ValueError(f"keep_teacher=True applies to mode 'paper' only; mode {mode!r} {effect}.")


def teacher_keep_mask(key: jax.Array,
                      num_teachers: int,
                      mode: str = "code",
                      keep_prob: float = 0.75,
                      drop_num: int = 1,
                      keep_teacher: bool = False) -> jax.Array:
  r"""Which teaching networks guide the student on this mini-batch (DGKD's stochastic teaching).

  ``dgkd`` draws it once per mini-batch; call it directly to drop teachers from a custom
  multi-teacher loss. Index 0 is the teacher, 1… the assistants from largest to smallest.

  - ``"code"`` (the official implementation): exactly ``drop_num`` of the ``n`` terms are
    removed, uniformly at random; the teacher can be among them.
  - ``"paper"``: each :math:`b_X \sim \mathrm{Bernoulli}(p)` independently, ``p =
    keep_prob`` (0.75 is the paper's best), the teacher included: the paper drops "a
    teacher or teacher assistants" per mini-batch. ``keep_teacher`` exempts the teacher.
  - ``"none"``: every network teaches.

  .. math::
     \texttt{"code"}:\ b \sim \mathrm{Uniform}\Big\{b \in \{0,1\}^n :
     \textstyle\sum_X b_X = n - \mathrm{drop\_num}\Big\},\qquad
     \texttt{"paper"}:\ b_X \overset{\mathrm{iid}}{\sim} \mathrm{Bernoulli}(p),\
     (b_0 = 1\ \text{with keep\_teacher})

  Args:
    key: a PRNG key; the same key gives the same mask (ignored, and may be ``None``, when
      ``mode="none"``).
    num_teachers: ``n``, teacher plus assistants.
    mode: ``"code"``, ``"paper"`` or ``"none"``.
    keep_prob: Bernoulli keep probability in ``(0, 1]`` (``"paper"``).
    drop_num: number of terms removed, ``0 <= drop_num < n`` (``"code"``).
    keep_teacher: keep the teacher in every mini-batch (``"paper"`` mode; a departure from
      the paper).

  Returns:
    Boolean ``[n]``; True marks a network that teaches.

  Raises:
    ValueError: on an unknown mode or out-of-range ``keep_prob`` / ``drop_num`` (see
      ``check_drop_arguments``).

  Example:
    >>> mask = teacher_keep_mask(jax.random.key(0), 3, mode="code", drop_num=1)
    >>> mask.shape, int(mask.sum())  # exactly one of the three dropped
    ((3,), 2)
    >>> bool(teacher_keep_mask(jax.random.key(1), 3, mode="paper", keep_prob=0.5)[0])
    True
    >>> teacher_keep_mask(None, 3, mode="none").tolist()
    [True, True, True]
  """
  check_drop_arguments(num_teachers, mode, keep_prob, drop_num, keep_teacher)
  if mode == "none":
    return jnp.ones((num_teachers,), bool)
  if mode == "code":
    dropped = jax.random.permutation(key, num_teachers)[:drop_num]
    return jnp.ones((num_teachers,), bool).at[dropped].set(False)
  keep = jax.random.bernoulli(key, keep_prob, (num_teachers,))
  return keep.at[0].set(True) if keep_teacher else keep


def dgkd(student_logits: jax.typing.ArrayLike,
         teacher_logits: jax.typing.ArrayLike,
         key: jax.Array | None = None,
         temperature: jax.typing.ArrayLike = 5.0,
         *,
         mode: str = "code",
         keep_prob: float = 0.75,
         drop_num: int = 1,
         keep_teacher: bool = False,
         class_reduction: str = "sum") -> jax.Array:
  r"""Per-example densely guided KD term: the student learns from every larger network.

  .. math::
     L = T^2 \sum_{X \in \{T, A_1, \dots, A_n\}} b_X\,
         \mathrm{KL}\big(p_X^T \,\|\, p_S^T\big),\qquad b_X \in \{0, 1\}

  with :math:`b` drawn once per mini-batch by ``teacher_keep_mask`` (the same draw for every
  example). The full DGKD objective is :math:`(1-\lambda)\,\mathrm{CE} + \lambda L`.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[n, ..., K]``: the teacher, then assistants from largest to smallest;
      treated as constants.
    key: PRNG key for the drop (unused when ``mode="none"``).
    temperature: T > 0 (5 in the paper).
    mode, keep_prob, drop_num, keep_teacher: see ``teacher_keep_mask``.
    class_reduction: ``"sum"`` or ``"mean"`` (PyTorch ``KLDivLoss()`` default, as in the
      official DGKD code); see ``kd``.

  Returns:
    Per-example losses ``[...]``.

  Raises:
    ValueError: on a badly stacked ``teacher_logits``, ``temperature <= 0``, a missing key,
      or bad dropping arguments.

  References:
    Son et al., "Densely Guided Knowledge Distillation using Multiple Teacher Assistants",
    ICCV 2021.

  Example:
    >>> s = jnp.zeros((4, 10))
    >>> dgkd(s, jnp.stack([s, s, s]), jax.random.key(0)).shape
    (4,)
  """
  s, ts = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  _check_stack(s, ts)
  v.check_positive("temperature", temperature)
  scale = v.class_reduction_scale(class_reduction, s.shape[-1])
  if mode != "none" and key is None:
    raise ValueError(f"DGKD mode {mode!r} drops teachers at random and needs a PRNG key.")
  keep = teacher_keep_mask(key, ts.shape[0], mode, keep_prob, drop_num, keep_teacher)
  ts = jax.lax.stop_gradient(ts)
  losses = tempered.tempered_kl(s[None], ts, temperature)
  keep = keep.reshape((-1,) + (1,) * (s.ndim - 1))
  return scale * jnp.sum(jnp.where(keep, losses, 0.0), axis=0)


def ensemble_kd(student_logits: jax.typing.ArrayLike,
                teacher_logits: jax.typing.ArrayLike,
                temperature: jax.typing.ArrayLike = 4.0,
                *,
                class_reduction: str = "sum") -> jax.Array:
  r"""Per-example KD toward the mean of several teachers' tempered probabilities.

  .. math::
     L = T^2\,\mathrm{KL}\Big(\tfrac1n \textstyle\sum_X p_X^T\ \Big\|\ p_S^T\Big)

  Averaging probabilities (not logits) keeps every teacher's dark knowledge; cross-entropy
  is linear in its target, so this equals the mean of the per-teacher KD losses up to a
  term that does not depend on the student.

  Args:
    student_logits: ``[..., K]``.
    teacher_logits: ``[n, ..., K]``; treated as constants.
    temperature: T > 0.
    class_reduction: ``"sum"`` or ``"mean"``; see ``kd``.

  Returns:
    Per-example losses ``[...]``.

  Raises:
    ValueError: on a badly stacked ``teacher_logits`` or ``temperature <= 0``.

  Example:
    >>> s = jnp.array([[1.0, 2.0]])
    >>> ensemble_kd(s, jnp.stack([s, s])).round(4).tolist()  # zero up to float32 rounding
    [0.0]
  """
  s, ts = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  _check_stack(s, ts)
  v.check_positive("temperature", temperature)
  scale = v.class_reduction_scale(class_reduction, s.shape[-1])
  ts = jax.lax.stop_gradient(ts) / temperature
  # Logits of the mixture, exact to O(eps / T): centred tempered logits are O(1/T), and
  # their log-normalisers and the mixture's log-mean are taken without adding O(1) terms.
  centered = ts - jnp.mean(ts, axis=-1, keepdims=True)
  log_probs = centered - tempered.log_mean_exp(centered, axis=-1)
  mixture = jnp.squeeze(tempered.log_mean_exp(log_probs, axis=0), axis=0)
  return scale * temperature**2 * tempered.kl_of_logit_shift(mixture,
                                                             mixture - s / temperature)
