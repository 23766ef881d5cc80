"""CIFAR ResNets ("6n+2"), as in RepDistiller's ``models/resnet.py``.

A 3×3 stem conv → BN → ReLU; three stages of n BasicBlocks with strides 1/2/2; global
average pooling; a Dense head. A block's shortcut is a 1×1 conv + BN whenever its stride or
width changes, else the identity. Convs have no bias, as in the reference.

Sown features (collection ``"intermediates"``, read with ``mutable=["intermediates"]``):

* ``"stem"``: ReLU(BN(conv)) of the stem, ``[B, H, W, widths[0]]``;
* ``"stage1"``, ``"stage2"``, ``"stage3"``: post-ReLU output of each stage's last block,
  ``[B, H, W, widths[1]]``, ``[B, H/2, W/2, widths[2]]``, ``[B, H/4, W/4, widths[3]]``;
* ``"pooled"``: the globally averaged vector fed to the head, ``[B, widths[3]]``.

These are RepDistiller's ``is_feat=True`` features ``f0 … f4`` (with ``preact=False``).

``kernel=(1, 3)`` gives the 1×N students of Pacemaker KD (Son et al., arXiv 2003.03944):
every 3×3 conv becomes 1×3 (the 1×1 shortcuts stay), for input consumed row by row on
embedded devices. A one-row filter at a vertical stride of 2 would skip every other row, so a
stride-2 1×N block first averages each pair of rows (the only place, with the global pooling,
where rows mix) and then strides along the width only, in its first conv and its shortcut
alike: every input row reaches the logits, the filters stay 1×N, and the parameter count is
that of the same network with the vertical stride. The paper does not say how its 1×N
students downsample; this is kdjax's choice. They are registered as ``resnet{depth}_1x3``.
"""

from typing import Any, ClassVar

from flax import linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import _layers


class BasicBlock(nn.Module):
  r"""Two 3×3 conv-BN layers with a residual connection, then ReLU.

  The building block of ``ResNet``; use it to assemble custom residual stages.

  .. math::
     y = \mathrm{ReLU}\big(\mathrm{BN}(W_2 * \mathrm{ReLU}(\mathrm{BN}(W_1 *_s x)))
         + \mathrm{sc}(x)\big)

  where :math:`*_s` is a stride-``strides`` conv and the shortcut :math:`\mathrm{sc}` is the
  identity, or a 1×1 stride-``strides`` conv + BN when the stride or width changes. With a
  one-row kernel (``kernel=(1, N)``) and ``strides`` s > 1, the block first averages each
  group of s rows of :math:`x` and both strided convs then stride along the width only, so
  that no input row is skipped.

  Attributes:
    features: the output width.
    strides: the stride of the first conv (and of the projection shortcut).
    dtype: the computation dtype.
    kernel: the (height, width) of the two convs; ``(1, 3)`` for a 1×N block.
    bn_axis_name: as in the network's ``bn_axis_name``.

  Example:
    >>> import functools
    >>> x = jnp.zeros((2, 8, 8, 16))
    >>> def shapes(block):  # init and apply on shapes only (jax.eval_shape)
    ...   variables = jax.eval_shape(functools.partial(block.init, train=False),
    ...                              jax.random.key(0), x)
    ...   y = jax.eval_shape(functools.partial(block.apply, train=False), variables, x)
    ...   return y.shape, "shortcut_conv" in variables["params"]
    >>> shapes(BasicBlock(features=32, strides=2))  # projection shortcut
    ((2, 4, 4, 32), True)
    >>> shapes(BasicBlock(features=16))  # identity shortcut
    ((2, 8, 8, 16), False)
  """

  features: int
  strides: int = 1
  dtype: _layers.Dtype = jnp.float32
  bn_axis_name: str | None = None
  kernel: tuple[int, int] = (3, 3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Applies the block.

    Args:
      x: ``[B, H, W, C]``.
      train: use batch statistics and update ``batch_stats`` (needs
        ``mutable=["batch_stats"]``).

    Returns:
      ``[B, ceil(H / strides), ceil(W / strides), features]``, non-negative (``H / strides``
      rounded down for a one-row kernel).
    """
    strides = (self.strides, self.strides)
    if self.kernel[0] == 1 and self.strides != 1:
      x = nn.avg_pool(x, (self.strides, 1), strides=(self.strides, 1))
      strides = (1, self.strides)
    y = _layers.conv(self.features, self.kernel, strides, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(_layers.batch_norm(train, self.dtype, "bn1", self.bn_axis_name)(y))
    y = _layers.conv(self.features, self.kernel, dtype=self.dtype, name="conv2")(y)
    y = _layers.batch_norm(train, self.dtype, "bn2", self.bn_axis_name)(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = _layers.conv(self.features, 1, strides, dtype=self.dtype, name="shortcut_conv")(x)
      x = _layers.batch_norm(train, self.dtype, "shortcut_bn", self.bn_axis_name)(x)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """CIFAR ResNet of depth 6n+2 with three stages of n BasicBlocks.

  The standard CIFAR distillation teachers and students (resnet56 → resnet20, resnet32x4 →
  resnet8x4, ...); get the registered ones with ``kdjax.models.get``.

  Example:
    >>> import functools
    >>> import jax, jax.numpy as jnp
    >>> model = ResNet(num_classes=10, depth=20)
    >>> x = jnp.zeros((2, 32, 32, 3))
    >>> # jax.eval_shape runs init and apply on shapes only; call them directly for arrays.
    >>> variables = jax.eval_shape(functools.partial(model.init, train=False),
    ...                            jax.random.key(0), x)
    >>> sum(p.size for p in jax.tree.leaves(variables["params"]))
    272474
    >>> logits, state = jax.eval_shape(
    ...     functools.partial(model.apply, train=True, mutable=["batch_stats", "intermediates"]),
    ...     variables, x)
    >>> logits.shape, state["intermediates"]["stage3"][0].shape
    ((2, 10), (2, 8, 8, 64))

  Attributes:
    num_classes: the number of logits K.
    depth: 6n+2, e.g. 8, 14, 20, 32, 56, 110.
    widths: the stem width, then the widths of the three stages.
    head_kernel_init: the initializer of the ``[widths[3], K]`` head kernel, e.g.
      ``kdjax.initializers.zero_mean()``.
    dtype: the computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and
      logits are returned in float32.
    bn_axis_name: the ``jax.pmap`` axis over which BatchNorm statistics are averaged in
      training (synchronised BatchNorm, e.g. ``kdjax.parallel.PMAP_AXIS``); ``None`` for
      one device or ``jax.jit`` over a mesh, where statistics are already global.
    kernel: the (height, width) of the stem's and blocks' convs: ``(3, 3)``, or ``(1, 3)``
      for the 1×N students of Pacemaker KD.
  """

  num_classes: int
  depth: int
  widths: tuple[int, int, int, int] = (16, 16, 32, 64)
  head_kernel_init: _layers.Initializer = _layers.HEAD_INIT
  dtype: _layers.Dtype = jnp.float32
  bn_axis_name: str | None = None
  kernel: tuple[int, int] = (3, 3)

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
      ValueError: if ``depth`` is not of the form 6n+2.
    """
    if self.depth < 8 or (self.depth - 2) % 6:
      raise ValueError(f"{self.depth=} must be 6n+2 with n >= 1, e.g. 8, 20, 56")
    blocks = (self.depth - 2) // 6
    x = jnp.asarray(x, self.dtype)
    x = _layers.conv(self.widths[0], self.kernel, dtype=self.dtype, name="stem_conv")(x)
    x = nn.relu(_layers.batch_norm(train, self.dtype, "stem_bn", self.bn_axis_name)(x))
    self.sow("intermediates", "stem", x)
    for stage, (width, strides) in enumerate(zip(self.widths[1:], (1, 2, 2), strict=True), start=1):
      for block in range(blocks):
        x = BasicBlock(
          width,
          strides if block == 0 else 1,
          dtype=self.dtype,
          bn_axis_name=self.bn_axis_name,
          kernel=self.kernel,
          name=f"stage{stage}_block{block + 1}",
        )(x, train)
      self.sow("intermediates", f"stage{stage}", x)
    x = jnp.mean(x, axis=(1, 2))
    self.sow("intermediates", "pooled", x)
    logits = _layers.head(self.num_classes, self.head_kernel_init, self.dtype)(x)
    return jnp.asarray(logits, jnp.float32)


_X4 = {"widths": (32, 64, 128, 256)}

# Architecture arguments of each registered name (see `kdjax.models.get`).
VARIANTS: dict[str, dict[str, Any]] = {
  "resnet8": {"depth": 8},
  "resnet14": {"depth": 14},
  "resnet20": {"depth": 20},
  "resnet26": {"depth": 26},
  "resnet32": {"depth": 32},
  "resnet44": {"depth": 44},
  "resnet56": {"depth": 56},
  "resnet110": {"depth": 110},
  "resnet8x4": {"depth": 8, **_X4},
  "resnet32x4": {"depth": 32, **_X4},
  # 1×N students and pacemakers of Pacemaker KD (N = 3).
  **{f"resnet{depth}_1x3": {"depth": depth, "kernel": (1, 3)} for depth in (8, 14, 20, 56, 110)},
}
