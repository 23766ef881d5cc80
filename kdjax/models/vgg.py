"""CIFAR VGGs with BatchNorm, as RepDistiller's ``models/vgg.py`` (``vgg8_bn``, ``vgg13_bn``).

Five blocks of conv3×3 (with bias) → BN → ReLU, separated by 2×2 max pools; global average
pooling; a single Dense head (the ImageNet FC layers are removed). The pool after block 3 is
applied only when its input is larger than 4×4: for 32×32 inputs it is skipped and for
64×64 inputs it is applied, as in the reference (which tests ``h == 64``).

Sown features (collection ``"intermediates"``), all post-ReLU and before the following pool:

* ``"stem"``: output of block 0, ``[B, H, W, 64]``;
* ``"stage1"`` … ``"stage4"``: outputs of blocks 1–4, ``[B, H/2, W/2, 128]``,
  ``[B, H/4, W/4, 256]``, ``[B, H/8, W/8, 512]``, ``[B, H/8, W/8, 512]`` for 32×32 inputs;
* ``"pooled"``: the globally averaged vector fed to the head, ``[B, 512]``.

These are RepDistiller's ``is_feat=True`` features ``f0 … f5`` (with ``preact=False``).
"""

from typing import Any, ClassVar

from flax import linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import _layers


def _max_pool(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (2, 2), strides=(2, 2))


class VGG(nn.Module):
  """CIFAR VGG with BatchNorm and a single-layer classifier.

  RepDistiller's vgg13 → vgg8 pair and a common teacher for cross-architecture students;
  get the registered ones with ``kdjax.models.get``.

  Example:
    >>> import functools
    >>> import jax, jax.numpy as jnp
    >>> model = VGG(num_classes=100, blocks=((64,), (128,), (256,), (512,), (512,)))
    >>> x = jnp.zeros((2, 32, 32, 3))
    >>> # jax.eval_shape runs init and apply on shapes only; call them directly for arrays.
    >>> variables = jax.eval_shape(functools.partial(model.init, train=False),
    ...                            jax.random.key(0), x)
    >>> jax.eval_shape(functools.partial(model.apply, train=False), variables, x).shape
    (2, 100)

  Attributes:
    num_classes: the number of logits K.
    blocks: five tuples with the conv widths of each block.
    head_kernel_init: the initializer of the ``[512, K]`` head kernel, e.g.
      ``kdjax.initializers.zero_mean()``.
    dtype: the computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and
      logits are returned in float32.
    bn_axis_name: the ``jax.pmap`` axis over which BatchNorm statistics are averaged in
      training (synchronised BatchNorm, e.g. ``kdjax.parallel.PMAP_AXIS``); ``None`` for
      one device or ``jax.jit`` over a mesh, where statistics are already global.
  """

  num_classes: int
  blocks: tuple[tuple[int, ...], ...]
  head_kernel_init: _layers.Initializer = _layers.HEAD_INIT
  dtype: _layers.Dtype = jnp.float32
  bn_axis_name: str | None = None

  feature_names: ClassVar[tuple[str, ...]] = (
    "stem",
    "stage1",
    "stage2",
    "stage3",
    "stage4",
    "pooled",
  )

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Computes logits.

    Args:
      x: images ``[B, H, W, C]`` (H and W divisible by 8).
      train: use batch statistics and update ``batch_stats`` (needs
        ``mutable=["batch_stats"]``).

    Returns:
      Logits ``[B, num_classes]`` in float32.

    Raises:
      ValueError: if ``blocks`` does not have five non-empty entries.
    """
    if len(self.blocks) != 5 or not all(self.blocks):
      raise ValueError(f"{self.blocks=} must be five non-empty tuples of conv widths")
    x = jnp.asarray(x, self.dtype)
    for b, widths in enumerate(self.blocks):
      if b in (1, 2, 3) or (b == 4 and x.shape[1] > 4):
        x = _max_pool(x)
      for i, width in enumerate(widths):
        x = _layers.conv(width, 3, use_bias=True, dtype=self.dtype, name=f"block{b}_conv{i}")(x)
        x = nn.relu(_layers.batch_norm(train, self.dtype, f"block{b}_bn{i}", self.bn_axis_name)(x))
      self.sow("intermediates", self.feature_names[b], x)
    x = jnp.mean(x, axis=(1, 2))
    self.sow("intermediates", "pooled", x)
    logits = _layers.head(self.num_classes, self.head_kernel_init, self.dtype)(x)
    return jnp.asarray(logits, jnp.float32)


# Architecture arguments of each registered name (see `kdjax.models.get`): RepDistiller's
# configurations "S" (vgg8) and "B" (vgg13).
VARIANTS: dict[str, dict[str, Any]] = {
  "vgg8": {"blocks": ((64,), (128,), (256,), (512,), (512,))},
  "vgg13": {"blocks": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))},
}
