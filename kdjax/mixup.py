r"""Mixup of a batch's images, for distillation on views that no label describes.

Beyer et al. ("Knowledge distillation: a good teacher is patient and consistent", 2022)
distil with *function matching*: teacher and student see the same aggressively augmented
view, mixup included, and the student matches the teacher's outputs on it with no labels.
Mixing the images before the fused train step is what makes the view consistent: the
teacher's forward pass inside the step runs on the mixed batch the student trains on.

The mix follows big_vision's ``utils.mixup``: one set of ratios per batch,

.. math::
   \lambda \sim \mathrm{Dirichlet}(\alpha \mathbf{1}_n), \qquad
   \tilde x_i = \sum_{j=0}^{n-1} \lambda_j \, x_{(i - j) \bmod B},

so each example is blended with its ``n - 1`` predecessors in the batch (``n = 2``:
:math:`\tilde x_i = \lambda_0 x_i + \lambda_1 x_{i-1}`, and with :math:`\alpha = 1`
:math:`\lambda_0` is uniform on [0, 1]).
"""

import jax
import jax.numpy as jnp

from kdjax import batch as batch_lib
from kdjax import step as step_lib


def check_concentration(concentration: float) -> None:
  """Refuses a concentration that is not a finite number > 0.

  Raises:
    ValueError: naming the value.

  Example:
    >>> check_concentration(0.0)
    Traceback (most recent call last):
    ...
    ValueError: mixup concentration=0.0 must be a finite number > 0...
  """
  if isinstance(concentration, bool) or not isinstance(concentration, (int, float)) or not (
      0 < concentration < float("inf")):
    raise ValueError(f"mixup concentration={concentration!r} must be a finite number > 0 "
                     f"(1.0: a uniform ratio).")


def mix_batch(key: jax.Array,
              batch: batch_lib.Batch,
              *,
              concentration: float = 1.0,
              num_mixed: int = 2) -> dict[str, jax.Array]:
  r"""Mixes the images of a batch with their predecessors; pure and jit-able.

  Apply it to the batch *before* the train step (``kdjax.step.make_train_step``), so the
  teacher's outputs are computed on the mixed images too. Use the same key on every
  process and for every student of a sweep: they must all see one view.

  Args:
    key: a PRNG key; one draw of :math:`\lambda` per call.
    batch: ``{"image": float [B, ...], ...}``. ``"label"`` is dropped (a blend of two
      images has no integer label; an objective that needs labels then fails loudly);
      ``"mask"`` ``[B]`` becomes the AND over the blended examples (padding never leaks into
      a real example); ``"index"`` keeps each example's own (the first of its blend).
    concentration: :math:`\alpha > 0`, the Dirichlet concentration (1: uniform ratio;
      small: ratios near 0 or 1, i.e. little mixing).
    num_mixed: :math:`n \ge 2`, the number of images blended into each example.

  Returns:
    The mixed batch (same shapes and dtypes, without ``"label"``).

  Raises:
    ValueError: on a bad ``concentration`` or ``num_mixed``, a batch without images or with
      integer images, or one carrying ``"teacher_logits"`` (cached teacher outputs describe
      the unmixed images).

  Example:
    >>> batch = {"image": jnp.array([[0.0], [1.0], [2.0]]), "label": jnp.array([0, 1, 2])}
    >>> mixed = mix_batch(jax.random.key(0), batch)
    >>> sorted(mixed)
    ['image']
    >>> lam = float(mixed["image"][1, 0])  # x̃_1 = λ₀·x_1 + λ₁·x_0 = λ₀
    >>> np.allclose(mixed["image"][:, 0], [2 * (1 - lam), lam, 1 + lam])
    True
  """
  check_concentration(concentration)
  if isinstance(num_mixed, bool) or not isinstance(num_mixed, int) or num_mixed < 2:
    raise ValueError(f"num_mixed={num_mixed!r} must be an integer >= 2.")
  if batch_lib.TEACHER_LOGITS in batch:
    raise ValueError("the batch carries cached 'teacher_logits', computed on unmixed images; "
                     "mixup needs the teacher to run on the mixed view (no teacher cache).")
  batch_lib.batch_size(batch)  # checks that there are images and one batch size
  images = jnp.asarray(batch[batch_lib.IMAGE])
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"mixup blends float images; batch['image'] has dtype {images.dtype} "
                     f"(normalise the images to floats first).")
  ratios = jax.random.dirichlet(key, jnp.full((num_mixed,), concentration, jnp.float32))
  mixed = sum(ratios[j] * jnp.roll(images, j, axis=0) for j in range(num_mixed))
  out = {k: jnp.asarray(v) for k, v in batch.items() if k != batch_lib.LABEL}
  out[batch_lib.IMAGE] = mixed.astype(images.dtype)
  if batch_lib.MASK in batch:
    mask = jnp.asarray(batch[batch_lib.MASK])
    out[batch_lib.MASK] = jnp.all(jnp.stack([jnp.roll(mask, j) for j in range(num_mixed)]),
                                  axis=0)
  return out


def with_mixup(train_step: step_lib.TrainStep, key: jax.Array, *, concentration: float,
               num_mixed: int = 2) -> step_lib.TrainStep:
  """Wraps a train step so that it trains on each batch mixed (``mix_batch``) first.

  The step is ``(state, teacher_vars, batch) -> (state, metrics)``, a single state or
  students stacked by ``kdjax.sweep``; the teacher inside it then runs on the mixed view.
  Each step draws its ratios with ``jax.random.fold_in(key, step)``, ``step`` being the
  (first student's) step counter before the update: every student of a sweep and every
  process sees the same view, and a resumed run mixes as the uninterrupted one did.

  Raises:
    ValueError: on a bad ``concentration``, at once.

  Example:
    >>> from kdjax import models, objective, sweep
    >>> from kdjax.state import create_train_state
    >>> student = models.get("mlp_tiny", 10)
    >>> images = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    >>> state = create_train_state(student, student.init(jax.random.key(1), images,
    ...                            train=False), optax.sgd(0.1), jax.random.key(2))
    >>> step = sweep.make_sweep_train_step(
    ...     student, objective.Objective((objective.term("kd"),)), optax.sgd(0.1),
    ...     teacher=models.get("mlp", 10))
    >>> teacher_vars = models.get("mlp", 10).init(jax.random.key(3), images, train=False)
    >>> mixed = jax.jit(with_mixup(step, jax.random.key(4), concentration=1.0))
    >>> states, metrics = mixed(sweep.stack_states([state]), teacher_vars, {"image": images})
    >>> "loss" in metrics, states.step.tolist()
    (True, [1])
  """
  check_concentration(concentration)

  def mixed_step(state, teacher_vars, batch):
    step_key = jax.random.fold_in(key, jnp.ravel(state.step)[0])
    return train_step(state, teacher_vars, mix_batch(step_key, batch,
                                                     concentration=concentration,
                                                     num_mixed=num_mixed))

  return mixed_step
