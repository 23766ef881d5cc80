"""Auxiliary trainable heads on student features, such as the FitNets hint regressor.

A head reads one named student feature and adds its output to the student's outputs under
its own name, where loss terms can use it (``term("hint", student_feature=<head name>,
...)``). Its variables live in ``TrainState.aux_params``/``aux_state``: they train with the
student, through the same optimizer, but are not part of the student's exported params.
"""

from collections.abc import Mapping
import dataclasses
from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

from kdjax import networks


class ConvRegressor(nn.Module):
  r"""FitNets' hint regressor, as RepDistiller's and mdistiller's ``ConvReg``.

  Use it as the ``module`` of an ``AuxHead`` when a feature loss (``hint``) needs the
  student's feature map in the teacher's shape; it trains with the student.

  .. math:: r(f) = \mathrm{ReLU}(\mathrm{BN}(W * f + b))

  The convolution maps the student's :math:`H_s \times W_s` onto the teacher's
  :math:`H_t \times W_t`, chosen as ``ConvReg`` chooses it (in this order):

  - :math:`H_s = 2H_t`: a 3×3 convolution of stride 2, padding 1;
  - :math:`2H_s = H_t`: a 4×4 transposed convolution of stride 2, padding 1;
  - :math:`H_s \ge H_t`: a :math:`(1 + H_s - H_t) \times (1 + W_s - W_t)` convolution
    without padding, i.e. 1×1 when the sizes are equal (resnet56 → resnet20: 1,056
    weights and biases for 32 → 32 channels).

  BatchNorm uses PyTorch's defaults (Flax ``momentum=0.9``, ``epsilon=1e-5``), as the
  models of ``kdjax.models`` do.

  Attributes:
    features: output channels :math:`C_t` (the teacher feature's channel count).
    spatial_size: the teacher feature's ``(H_t, W_t)``; ``None`` for the student's own.
    bn_axis_name: the ``pmap`` axis to synchronise BatchNorm statistics over, if any.

  Raises:
    ValueError: when called on a student map smaller than the teacher's, other than half
      its size (``ConvReg`` has no convolution for it).

  References:
    Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015; RepDistiller
    ``models/util.py`` (``ConvReg``), mdistiller ``mdistiller/distillers/_common.py``.

  Example:
    >>> import functools
    >>> f = jnp.ones((2, 8, 8, 4))  # student features [B, H, W, C_s]
    >>> for size in (None, (4, 4), (16, 16), (6, 6)):
    ...   reg = ConvRegressor(features=8, spatial_size=size)
    ...   # jax.eval_shape runs init and apply on shapes only; call them directly for arrays.
    ...   variables = jax.eval_shape(functools.partial(reg.init, train=False),
    ...                              jax.random.key(0), f)
    ...   kernel = variables["params"]["conv"]["kernel"].shape
    ...   out = jax.eval_shape(functools.partial(reg.apply, train=False), variables, f).shape
    ...   print(size, kernel, out)
    None (1, 1, 4, 8) (2, 8, 8, 8)
    (4, 4) (3, 3, 4, 8) (2, 4, 4, 8)
    (16, 16) (4, 4, 8, 4) (2, 16, 16, 8)
    (6, 6) (3, 3, 4, 8) (2, 6, 6, 8)
  """

  features: int
  spatial_size: tuple[int, int] | None = None
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Regresses a student feature map onto the teacher's channels and spatial size.

    Args:
      x: student features ``[B, H_s, W_s, C_s]``.
      train: use batch statistics and update ``batch_stats`` (needs
        ``mutable=["batch_stats"]``).

    Returns:
      ``[B, H_t, W_t, features]``, non-negative.
    """
    s_h, s_w = x.shape[1:3]
    t_h, t_w = self.spatial_size or (s_h, s_w)
    if s_h == 2 * t_h:
      conv = nn.Conv(self.features, (3, 3), strides=2, padding=((1, 1), (1, 1)), name="conv")
    elif 2 * s_h == t_h:
      # PyTorch's ConvTranspose2d(kernel 4, stride 2, padding 1) pads the dilated input by
      # kernel - 1 - padding = 2 on each side.
      conv = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                              transpose_kernel=True, name="conv")
    elif s_h >= t_h:
      conv = nn.Conv(self.features, (1 + s_h - t_h, 1 + s_w - t_w), padding="VALID",
                     name="conv")
    else:
      raise ValueError(f"the student feature map ({s_h}×{s_w}) is smaller than the "
                       f"teacher's ({t_h}×{t_w}) and not half its size: FitNets' regressor "
                       f"has no convolution for it.")
    x = conv(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=self.bn_axis_name)(x)
    return nn.relu(x)


class GlobalTemperature(nn.Module):
  r"""CTKD's global temperature: one learnable raw value θ for every example.

  Its output is θ broadcast to the batch ``[B]``; ``kdjax.losses.ctkd`` maps it to
  :math:`T_0 + \Delta\,\sigma(\theta)`. The feature it is applied to only gives
  the batch size. θ starts at 1, as the official ``Global_T``.

  Example:
    >>> head = GlobalTemperature()
    >>> variables = head.init(jax.random.key(0), jnp.zeros((4, 16)), train=False)
    >>> head.apply(variables, jnp.zeros((4, 16)), train=False).tolist()
    [1.0, 1.0, 1.0, 1.0]
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Returns θ ``[B]`` for a feature ``x`` ``[B, ...]``."""
    del train
    raw = self.param("raw_temperature", nn.initializers.ones, ())
    return jnp.broadcast_to(raw, x.shape[:1])


class InstanceTemperature(nn.Module):
  """CTKD's instance temperature: a small MLP giving each example its raw value θ_i.

  Reads the student's pooled features with ``stop_gradient`` (the temperature network
  adapts to the student, it does not train it); the official ``Temp_MLP`` reads the
  concatenated logits of teacher and student instead, which a head on student features
  cannot see.

  Attributes:
    hidden: the width of the hidden layer.

  Example:
    >>> head = InstanceTemperature(hidden=8)
    >>> variables = head.init(jax.random.key(0), jnp.zeros((4, 16)), train=False)
    >>> head.apply(variables, jnp.ones((4, 16)), train=False).shape
    (4,)
  """

  hidden: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Returns θ ``[B]`` for features ``x`` ``[B, C]``."""
    del train
    x = jax.lax.stop_gradient(x.reshape(x.shape[0], -1))
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(1)(x)[:, 0]


@dataclasses.dataclass(frozen=True)
class AuxHead:
  """A trainable Linen module applied to one student feature.

  Pass a name → ``AuxHead`` mapping as ``aux_heads`` to ``kdjax.state.create_train_state``
  and ``kdjax.step.make_train_step`` when a loss needs a learned transformation of a student
  feature, such as FitNets' regressor; loss terms then read the head's output by its name.

  Attributes:
    module: a Linen module called as ``module(feature, train=...)``.
    source: the name of the student feature it reads (e.g. ``"stage2"``).

  Example:
    >>> head = AuxHead(ConvRegressor(features=8), source="stage1")
    >>> head.source, head.network.name
    ('stage1', 'ConvRegressor')
  """

  module: nn.Module
  source: str

  @property
  def network(self) -> networks.Network:
    """The head's ``module`` as a ``kdjax.networks.Network`` (``networks.from_linen``)."""
    return networks.from_linen(self.module)


def check_heads(heads: Mapping[str, AuxHead]) -> dict[str, AuxHead]:
  """Validates a name → ``AuxHead`` mapping and returns it as a dict.

  ``create_train_state`` and the step builders call it on their ``aux_heads``; call it
  yourself to fail early when building heads from a config.

  Args:
    heads: head name → ``AuxHead``.

  Returns:
    The same heads as a new ``dict``.

  Raises:
    ValueError: on a head named ``"logits"`` (reserved for the model's output), or a value
      that is not an ``AuxHead``.

  Example:
    >>> head = AuxHead(ConvRegressor(features=8), source="stage1")
    >>> list(check_heads({"hint": head}))
    ['hint']
    >>> check_heads({"logits": head})
    Traceback (most recent call last):
    ...
    ValueError: an aux head cannot be named 'logits'.
    >>> check_heads({"hint": ConvRegressor(features=8)})
    Traceback (most recent call last):
    ...
    ValueError: aux head 'hint' must be a kdjax.heads.AuxHead; got ConvRegressor.
  """
  heads = dict(heads)
  for name, head in heads.items():
    if name == networks.LOGITS:
      raise ValueError(f"an aux head cannot be named {networks.LOGITS!r}.")
    if not isinstance(head, AuxHead):
      raise ValueError(f"aux head {name!r} must be a kdjax.heads.AuxHead; got "
                       f"{type(head).__name__}.")
  return heads


def init_heads(heads: Mapping[str, AuxHead], features: Mapping[str, Any],
               rng: jax.Array) -> tuple[dict[str, Any], dict[str, Any]]:
  """Initialises every head on (shapes of) the student features it reads.

  ``create_train_state`` calls it with the shapes of the student's features; only each
  feature's shape and dtype are used, so ``jax.eval_shape`` output is enough. Head ``i`` (in
  name order) is initialised with ``fold_in(rng, i)``.

  Args:
    heads: name → ``AuxHead``.
    features: student feature name → array or ``jax.ShapeDtypeStruct`` (e.g.
      ``[B, H, W, C]``); must hold every head's ``source``.
    rng: a PRNG key.

  Returns:
    ``(aux_params, aux_state)``, each a dict keyed by head name (``aux_state`` holds, e.g.,
    the head's ``batch_stats``; empty dicts when there are no heads).

  Raises:
    KeyError: if a head's ``source`` is not in ``features``.

  Example:
    >>> heads = {"hint": AuxHead(ConvRegressor(features=8), source="stage1")}
    >>> features = {"stage1": jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)}
    >>> aux_params, aux_state = init_heads(heads, features, jax.random.key(0))
    >>> aux_params["hint"]["conv"]["kernel"].shape, sorted(aux_state["hint"])
    ((1, 1, 4, 8), ['batch_stats'])
  """
  aux_params, aux_state = {}, {}
  for i, (name, head) in enumerate(sorted(heads.items())):
    feature = features[head.source]
    # Jitted: an op-by-op init compiles every random initialiser separately.
    init = jax.jit(lambda key, x, module=head.module: module.init(key, x, train=False))
    variables = init(jax.random.fold_in(rng, i), jnp.zeros(feature.shape, feature.dtype))
    aux_params[name], aux_state[name] = head.network.split(variables)
  return aux_params, aux_state
