"""Plain CNNs "plane2 … plane10" of the TAKD and DGKD code (``ConvNetMaker``).

A stack of conv3×3 (with bias) → BN → ReLU layers and 2×2 max pools, flattened into optional
hidden Dense → ReLU layers and a Dense head. The layouts are TAKD's ``plane_cifar10_book``
and ``plane_cifar100_book`` (``plain_cnn_cifar.py``, identical in the DGKD code), which
differ in width and, for plane6, in the final pool; the last FC of the book becomes the head.

Sown features (collection ``"intermediates"``):

* ``"stage1"``, ``"stage2"``, …: the post-ReLU output of each run of convs, before the max
  pool that ends it (plane2 on 32×32: ``[B, 32, 32, w]`` and ``[B, 16, 16, w]``);
* ``"pooled"``: the vector fed to the head: the last hidden Dense's ReLU output if there is
  one (plane8, plane10), else the flattened conv features.

``PlainCNN(...).feature_names`` lists them for a given layout.
"""

from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import _layers

POOL = "M"
"""Marks a 2×2 max pool in a ``PlainCNN.convs`` layout."""

_M = POOL
# depth -> (convs, hidden), from TAKD's `plane_cifar10_book` / `plane_cifar100_book`.
PLANE_CIFAR10_BOOK: dict[int, tuple[tuple[int | str, ...], tuple[int, ...]]] = {
  2: ((16, _M, 16, _M), ()),
  4: ((16, 16, _M, 32, 32, _M), ()),
  6: ((16, 16, _M, 32, 32, _M, 64, 64, _M), ()),
  8: ((16, 16, _M, 32, 32, _M, 64, 64, _M, 128, 128, _M), (64,)),
  10: ((32, 32, _M, 64, 64, _M, 128, 128, _M, 256, 256, 256, 256, _M), (128,)),
}
PLANE_CIFAR100_BOOK: dict[int, tuple[tuple[int | str, ...], tuple[int, ...]]] = {
  2: ((32, _M, 32, _M), ()),
  4: ((32, 32, _M, 64, 64, _M), ()),
  6: ((32, 32, _M, 64, 64, _M, 128, 128), ()),
  8: ((32, 32, _M, 64, 64, _M, 128, 128, _M, 256, 256, _M), (64,)),
  10: ((32, 32, _M, 64, 64, _M, 128, 128, _M, 256, 256, 256, 256, _M), (512,)),
}
_BOOKS = {"cifar10": PLANE_CIFAR10_BOOK, "cifar100": PLANE_CIFAR100_BOOK}


class PlainCNN(nn.Module):
  """A plain (residual-free) CNN described by a layout of conv widths and pools.

  Use ``plane`` (or ``kdjax.models.get("plane4", ...)``) for TAKD's reference layouts, or
  this class directly for a custom layout.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = PlainCNN(num_classes=10, convs=(16, POOL, 16, POOL))
    >>> x = jnp.zeros((2, 32, 32, 3))
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> model.apply(variables, x, train=False).shape, model.feature_names
    ((2, 10), ('stage1', 'stage2', 'pooled'))

  Attributes:
    num_classes: the number of logits K.
    convs: the conv layout: an ``int`` is a conv3×3-BN-ReLU of that width, ``POOL`` a 2×2
      max pool.
    hidden: widths of the hidden Dense → ReLU layers between the flattened features and the
      head.
    head_kernel_init: the initializer of the head kernel, e.g.
      ``kdjax.initializers.zero_mean()``.
    dtype: the computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and
      logits are returned in float32.
    bn_axis_name: the ``jax.pmap`` axis over which BatchNorm statistics are averaged in
      training (synchronised BatchNorm, e.g. ``kdjax.parallel.PMAP_AXIS``); ``None`` for
      one device or ``jax.jit`` over a mesh, where statistics are already global.
  """

  num_classes: int
  convs: tuple[int | str, ...]
  hidden: tuple[int, ...] = ()
  head_kernel_init: _layers.Initializer = _layers.HEAD_INIT
  dtype: _layers.Dtype = jnp.float32
  bn_axis_name: str | None = None

  @property
  def feature_names(self) -> tuple[str, ...]:
    """The names sown into ``"intermediates"``: one per run of convs, then ``"pooled"``."""
    return tuple(f"stage{s + 1}" for s in range(len(self._stage_ends()))) + ("pooled",)

  def _stage_ends(self) -> tuple[int, ...]:
    """Indices in ``convs`` of the last conv of each run of convs."""
    return tuple(
      i
      for i, layer in enumerate(self.convs)
      if layer != POOL and (i + 1 == len(self.convs) or self.convs[i + 1] == POOL)
    )

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Computes logits.

    Args:
      x: images ``[B, H, W, C]``; the reference layouts assume 32×32.
      train: use batch statistics and update ``batch_stats`` (needs
        ``mutable=["batch_stats"]``).

    Returns:
      Logits ``[B, num_classes]`` in float32.

    Raises:
      ValueError: if ``convs`` holds something other than positive ints and ``POOL``.
    """
    if not all(layer == POOL or (isinstance(layer, int) and layer > 0) for layer in self.convs):
      raise ValueError(f"{self.convs=} must hold positive conv widths and {POOL!r} (max pool)")
    stage_ends = self._stage_ends()
    x = jnp.asarray(x, self.dtype)
    for i, layer in enumerate(self.convs):
      if layer == POOL:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      x = _layers.conv(layer, 3, use_bias=True, dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(_layers.batch_norm(train, self.dtype, f"bn{i}", self.bn_axis_name)(x))
      if i in stage_ends:
        self.sow("intermediates", f"stage{stage_ends.index(i) + 1}", x)
    x = x.reshape(x.shape[0], -1)
    for j, width in enumerate(self.hidden):
      x = nn.Dense(
        width,
        kernel_init=_layers.DENSE_INIT,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=f"fc{j}",
      )(x)
      x = nn.relu(x)
    self.sow("intermediates", "pooled", x)
    logits = _layers.head(self.num_classes, self.head_kernel_init, self.dtype)(x)
    return jnp.asarray(logits, jnp.float32)


def plane(depth: int, num_classes: int, *, book: str | None = None, **kwargs: Any) -> PlainCNN:
  """Builds TAKD's ``plane{depth}``.

  ``kdjax.models.get("plane{depth}", num_classes)`` calls it; call it directly to pick the
  layout table explicitly. The TAKD/DGKD chains (e.g. plane10 → plane8 → … → plane2) use
  these as teacher, assistants and student.

  Args:
    depth: 2, 4, 6, 8 or 10.
    num_classes: the number of logits K (the width of the book's last FC).
    book: ``"cifar10"`` or ``"cifar100"``, the TAKD layout table to use; by default
      ``"cifar10"`` when ``num_classes <= 10``, else ``"cifar100"`` (TAKD picks the table by
      dataset).
    **kwargs: further ``PlainCNN`` fields (``head_kernel_init``, ``dtype``).

  Returns:
    The ``PlainCNN`` (unbound), mapping images ``[B, 32, 32, C]`` to logits
    ``[B, num_classes]``.

  Raises:
    ValueError: on an unknown ``depth`` or ``book``.

  Example:
    >>> plane(4, 10).convs, plane(4, 100).convs
    ((16, 16, 'M', 32, 32, 'M'), (32, 32, 'M', 64, 64, 'M'))
    >>> plane(8, 10).hidden, plane(8, 10).feature_names
    ((64,), ('stage1', 'stage2', 'stage3', 'stage4', 'pooled'))
    >>> plane(3, 10)
    Traceback (most recent call last):
    ...
    ValueError: unknown depth=3; valid: 2, 4, 6, 8, 10
  """
  if book is None:
    book = "cifar10" if num_classes <= 10 else "cifar100"
  if book not in _BOOKS:
    raise ValueError(f"unknown {book=}; valid: {', '.join(_BOOKS)}")
  if depth not in _BOOKS[book]:
    raise ValueError(f"unknown {depth=}; valid: {', '.join(map(str, _BOOKS[book]))}")
  convs, hidden = _BOOKS[book][depth]
  return PlainCNN(num_classes=num_classes, convs=convs, hidden=hidden, **kwargs)
