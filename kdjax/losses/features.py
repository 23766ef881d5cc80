"""Feature-map distillation losses: FitNets hints and attention transfer."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from kdjax.losses import validation as v


def _check_batched(name: str, x: jax.Array) -> None:
  if x.ndim < 2:
    raise ValueError(f"{name} must be batched features [B, ...]; got shape {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point; got dtype {x.dtype}.")


def hint(student_features: jax.typing.ArrayLike,
         teacher_features: jax.typing.ArrayLike) -> jax.Array:
  r"""Per-example FitNets hint loss: mean squared error between feature maps.

  .. math:: L_i = \frac{1}{|f|}\,\lVert r(f^s_i) - f^t_i \rVert^2

  ``student_features`` is the output of the learned regressor :math:`r` (a conv + BN + ReLU
  on the student's guided layer), already projected to the teacher's shape. FitNets trains
  with ``CE + 100 · hint``.

  Args:
    student_features: ``[B, ...]`` regressed student features.
    teacher_features: ``[B, ...]``, same shape; treated as a constant.

  Returns:
    Per-example losses ``[B]`` (mean over every non-batch axis).

  Raises:
    ValueError: on mismatched shapes, unbatched inputs (fewer than 2 axes) or non-float
      features.

  References:
    Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.

  Example:
    >>> hint(jnp.ones((2, 4, 4, 3)), jnp.zeros((2, 4, 4, 3))).tolist()
    [1.0, 1.0]
  """
  s, t = jnp.asarray(student_features), jnp.asarray(teacher_features)
  _check_batched("student_features", s)
  v.check_same_shape(s, t, what="features")
  t = jax.lax.stop_gradient(t)
  return jnp.mean((s - t)**2, axis=tuple(range(1, s.ndim)))


def attention_map(features: jax.Array) -> jax.Array:
  r"""Spatial attention map of NHWC features, flattened and L2-normalised per example.

  The building block of ``attention_transfer``; use it to inspect or plot where a network
  attends (reshape a row to ``[H, W]``).

  .. math::
     a_{hw} = \frac1C \textstyle\sum_c f_{hwc}^2,\qquad
     a \leftarrow \frac{a}{\max(\lVert a \rVert_2,\ 10^{-12})}

  Args:
    features: ``[B, H, W, C]``, floating point.

  Returns:
    ``[B, H·W]``, each row of unit L2 norm (zero rows stay zero).

  Example:
    >>> a = attention_map(jnp.ones((2, 4, 4, 3)))
    >>> a.shape, float(a[0, 0]), float(jnp.linalg.norm(a[0]))
    ((2, 16), 0.25, 1.0)
    >>> attention_map(jnp.zeros((1, 2, 2, 3))).tolist()
    [[0.0, 0.0, 0.0, 0.0]]
  """
  a = jnp.mean(features**2, axis=-1).reshape(features.shape[0], -1)
  norm = jnp.linalg.norm(a, axis=-1, keepdims=True)
  return a / jnp.maximum(norm, 1e-12)


def attention_transfer(student_features: Sequence[jax.typing.ArrayLike],
                       teacher_features: Sequence[jax.typing.ArrayLike]) -> jax.Array:
  r"""Per-example attention-transfer loss summed over stages.

  .. math:: L_i = \sum_{\text{stages}} \frac{1}{HW}\,\lVert a(f^s_i) - a(f^t_i) \rVert^2

  Channels may differ between student and teacher; batch and spatial sizes must agree.
  The paper's CIFAR setting weights this by 1000.

  Args:
    student_features: sequence of ``[B, H, W, C_s]`` stage outputs.
    teacher_features: sequence of ``[B, H, W, C_t]``, same length; treated as constants.

  Returns:
    Per-example losses ``[B]``.

  Raises:
    ValueError: on a single array instead of a sequence, empty sequences or sequences of
      different lengths, or a stage that is not 4-D or whose batch or spatial shapes differ.

  References:
    Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017.

  Example:
    >>> f = jnp.ones((2, 4, 4, 8))
    >>> attention_transfer([f], [2.0 * f[..., :3]]).tolist()
    [0.0, 0.0]
  """
  if isinstance(student_features, jax.Array) or isinstance(teacher_features, jax.Array):
    raise ValueError("attention_transfer takes sequences of stage features, one per stage.")
  if len(student_features) != len(teacher_features) or not student_features:
    raise ValueError(
        f"attention_transfer needs the same non-zero number of student and teacher stages; "
        f"got {len(student_features)} and {len(teacher_features)}.")
  total = 0.0
  for i, (fs, ft) in enumerate(zip(student_features, teacher_features, strict=True)):
    fs, ft = jnp.asarray(fs), jnp.asarray(ft)
    if fs.ndim != 4 or ft.ndim != 4 or fs.shape[:3] != ft.shape[:3]:
      raise ValueError(
          f"stage {i}: student and teacher features must be [B, H, W, C] with equal B, H, W; "
          f"got {fs.shape} and {ft.shape}.")
    ft = jax.lax.stop_gradient(ft)
    total = total + jnp.mean((attention_map(fs) - attention_map(ft))**2, axis=-1)
  return total
