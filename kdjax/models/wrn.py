"""Pre-activation Wide ResNets WRN-d-k, as in RepDistiller's ``models/wrn.py``.

Depth d = 6n+4, widths 16 (stem), 16k, 32k, 64k; three stages of n pre-activation blocks
with strides 1/2/2; a final BN → ReLU; global average pooling; a Dense head. Within a block,
BN → ReLU is applied to the input; when the width changes, that activated input also feeds
the 1×1 projection shortcut, otherwise the shortcut is the raw input. Convs have no bias;
no dropout (the reference's ``dropRate`` is 0 for all registered variants).

Sown features (collection ``"intermediates"``):

* ``"stem"``: the stem conv output, ``[B, H, W, 16]`` (no BN or ReLU follows it directly);
* ``"stage1"``, ``"stage2"``, ``"stage3"``: each stage's output, ``[B, H, W, 16k]``,
  ``[B, H/2, W/2, 32k]``, ``[B, H/4, W/4, 64k]``;
* ``"pooled"``: ReLU(BN(stage3)) globally averaged, ``[B, 64k]``.

In a pre-activation network a stage's output is the residual sum, which the next block (or
the final BN) normalises before any ReLU. The stage features are that residual sum, not
post-ReLU, so that they equal RepDistiller's ``is_feat=True`` features ``f0 … f4`` that its
feature-distillation baselines (FitNet, AT, …) were tuned on. They can be negative; apply a
ReLU in the distillation loss if a method needs non-negative maps.
"""

from typing import Any, ClassVar

from flax import linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import _layers


class WideBasicBlock(nn.Module):
  r"""Pre-activation block: BN → ReLU → conv3×3 → BN → ReLU → conv3×3, plus a shortcut.

  The building block of ``WideResNet``; use it to assemble custom pre-activation stages.

  .. math::
     a = \mathrm{ReLU}(\mathrm{BN}(x)),\qquad
     y = W_2 * \mathrm{ReLU}(\mathrm{BN}(W_1 *_s a)) + \mathrm{sc}

  where :math:`*_s` is a stride-``strides`` conv and :math:`\mathrm{sc}` is :math:`x` itself,
  or :math:`W_{1\times1} *_s a` when the stride or width changes. No ReLU follows the sum.

  Attributes:
    features: the output width.
    strides: the stride of the first conv (and of the projection shortcut).
    dtype: the computation dtype.
    bn_axis_name: as in the network's ``bn_axis_name``.

  Example:
    >>> import functools
    >>> x = jnp.zeros((2, 8, 8, 16))
    >>> def shapes(block):  # init and apply on shapes only (jax.eval_shape)
    ...   variables = jax.eval_shape(functools.partial(block.init, train=False),
    ...                              jax.random.key(0), x)
    ...   y = jax.eval_shape(functools.partial(block.apply, train=False), variables, x)
    ...   return y.shape, "shortcut_conv" in variables["params"]
    >>> shapes(WideBasicBlock(features=32, strides=2))  # projection shortcut
    ((2, 4, 4, 32), True)
    >>> shapes(WideBasicBlock(features=16))  # identity shortcut
    ((2, 8, 8, 16), False)
  """

  features: int
  strides: int = 1
  dtype: _layers.Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Applies the block.

    Args:
      x: ``[B, H, W, C]``.
      train: use batch statistics and update ``batch_stats`` (needs
        ``mutable=["batch_stats"]``).

    Returns:
      The residual sum ``[B, ceil(H / strides), ceil(W / strides), features]`` (not
      activated; it can be negative).
    """
    activated = nn.relu(_layers.batch_norm(train, self.dtype, "bn1", self.bn_axis_name)(x))
    y = _layers.conv(self.features, 3, self.strides, dtype=self.dtype, name="conv1")(activated)
    y = nn.relu(_layers.batch_norm(train, self.dtype, "bn2", self.bn_axis_name)(y))
    y = _layers.conv(self.features, 3, dtype=self.dtype, name="conv2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = _layers.conv(self.features, 1, self.strides, dtype=self.dtype, name="shortcut_conv")(
        activated
      )
    return y + x


class WideResNet(nn.Module):
  """Pre-activation Wide ResNet WRN-depth-widen_factor for CIFAR.

  RepDistiller's WRN teachers and students (wrn_40_2 → wrn_16_2, ...); get the registered
  ones with ``kdjax.models.get``.

  Example:
    >>> import functools
    >>> import jax, jax.numpy as jnp
    >>> model = WideResNet(num_classes=100, depth=16, widen_factor=2)
    >>> x = jnp.zeros((2, 32, 32, 3))
    >>> # jax.eval_shape runs init and apply on shapes only; call them directly for arrays.
    >>> variables = jax.eval_shape(functools.partial(model.init, train=False),
    ...                            jax.random.key(0), x)
    >>> sum(p.size for p in jax.tree.leaves(variables["params"]))  # wrn_16_2
    703284
    >>> jax.eval_shape(functools.partial(model.apply, train=False), variables, x).shape
    (2, 100)

  Attributes:
    num_classes: the number of logits K.
    depth: 6n+4, e.g. 16, 28, 40.
    widen_factor: k, the width multiplier of the three stages.
    head_kernel_init: the initializer of the ``[64k, K]`` head kernel, e.g.
      ``kdjax.initializers.zero_mean()``.
    dtype: the computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and
      logits are returned in float32.
    bn_axis_name: the ``jax.pmap`` axis over which BatchNorm statistics are averaged in
      training (synchronised BatchNorm, e.g. ``kdjax.parallel.PMAP_AXIS``); ``None`` for
      one device or ``jax.jit`` over a mesh, where statistics are already global.
  """

  num_classes: int
  depth: int
  widen_factor: int = 1
  head_kernel_init: _layers.Initializer = _layers.HEAD_INIT
  dtype: _layers.Dtype = jnp.float32
  bn_axis_name: str | None = None

  feature_names: ClassVar[tuple[str, ...]] = ("stem", "stage1", "stage2", "stage3", "pooled")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Computes logits.

    Args:
      x: images ``[B, H, W, C]`` (H and W divisible by 4).
      train: use batch statistics and update ``batch_stats`` (needs
        ``mutable=["batch_stats"]``).

    Returns:
      Logits ``[B, num_classes]`` in float32.

    Raises:
      ValueError: if ``depth`` is not of the form 6n+4 or ``widen_factor`` < 1.
    """
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f"{self.depth=} must be 6n+4 with n >= 1, e.g. 16, 28, 40")
    if self.widen_factor < 1:
      raise ValueError(f"{self.widen_factor=} must be >= 1")
    blocks = (self.depth - 4) // 6
    widths = tuple(w * self.widen_factor for w in (16, 32, 64))
    x = jnp.asarray(x, self.dtype)
    x = _layers.conv(16, 3, dtype=self.dtype, name="stem_conv")(x)
    self.sow("intermediates", "stem", x)
    for stage, (width, strides) in enumerate(zip(widths, (1, 2, 2), strict=True), start=1):
      for block in range(blocks):
        x = WideBasicBlock(
          width,
          strides if block == 0 else 1,
          dtype=self.dtype,
          bn_axis_name=self.bn_axis_name,
          name=f"stage{stage}_block{block + 1}",
        )(x, train)
      self.sow("intermediates", f"stage{stage}", x)
    x = nn.relu(_layers.batch_norm(train, self.dtype, "final_bn", self.bn_axis_name)(x))
    x = jnp.mean(x, axis=(1, 2))
    self.sow("intermediates", "pooled", x)
    logits = _layers.head(self.num_classes, self.head_kernel_init, self.dtype)(x)
    return jnp.asarray(logits, jnp.float32)


# Architecture arguments of each registered name (see `kdjax.models.get`).
VARIANTS: dict[str, dict[str, Any]] = {
  "wrn_16_1": {"depth": 16, "widen_factor": 1},
  "wrn_16_2": {"depth": 16, "widen_factor": 2},
  "wrn_40_1": {"depth": 40, "widen_factor": 1},
  "wrn_40_2": {"depth": 40, "widen_factor": 2},
}
