"""A small MLP on flattened inputs, for the 8×8 digits dataset and for fast unit tests.

Each hidden layer is Dense (no bias) → BN → ReLU; the head is a Dense. With
``hidden_sizes=()`` the model is multinomial logistic regression and has no ``batch_stats``.

Sown features (collection ``"intermediates"``):

* ``"stage1"``, ``"stage2"``, …: the post-ReLU output of every hidden layer but the last,
  ``[B, hidden_sizes[i]]``;
* ``"pooled"``: the vector fed to the head: the last hidden layer's output, or the
  flattened input when there is no hidden layer.
"""

from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import _layers


class MLP(nn.Module):
  """Flatten → (Dense → BN → ReLU) × len(hidden_sizes) → Dense head.

  For the 8×8 digits dataset and for fast tests and examples (``"mlp_tiny"`` has one
  hidden layer of 16); not a CIFAR model.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = MLP(num_classes=10, hidden_sizes=(32,))
    >>> x = jnp.zeros((2, 8, 8, 1))
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> model.apply(variables, x, train=False).shape, model.feature_names
    ((2, 10), ('pooled',))

  Attributes:
    num_classes: the number of logits K.
    hidden_sizes: the widths of the hidden layers.
    head_kernel_init: the initializer of the head kernel, e.g.
      ``kdjax.initializers.zero_mean()``.
    dtype: the computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and
      logits are returned in float32.
    bn_axis_name: the ``jax.pmap`` axis over which BatchNorm statistics are averaged in
      training (synchronised BatchNorm, e.g. ``kdjax.parallel.PMAP_AXIS``); ``None`` for
      one device or ``jax.jit`` over a mesh, where statistics are already global.
  """

  num_classes: int
  hidden_sizes: tuple[int, ...] = (128, 128)
  head_kernel_init: _layers.Initializer = _layers.HEAD_INIT
  dtype: _layers.Dtype = jnp.float32
  bn_axis_name: str | None = None

  @property
  def feature_names(self) -> tuple[str, ...]:
    """The names sown into ``"intermediates"``: ``stage1 …`` for all hidden but the last."""
    return tuple(f"stage{i + 1}" for i in range(len(self.hidden_sizes) - 1)) + ("pooled",)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Computes logits.

    Args:
      x: inputs ``[B, ...]`` (e.g. images ``[B, H, W, C]``), flattened per example.
      train: use batch statistics and update ``batch_stats`` (needs
        ``mutable=["batch_stats"]``).

    Returns:
      Logits ``[B, num_classes]`` in float32.
    """
    x = jnp.asarray(x, self.dtype).reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden_sizes):
      x = nn.Dense(
        width,
        use_bias=False,
        kernel_init=_layers.DENSE_INIT,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=f"fc{i}",
      )(x)
      x = nn.relu(_layers.batch_norm(train, self.dtype, f"bn{i}", self.bn_axis_name)(x))
      if i + 1 < len(self.hidden_sizes):
        self.sow("intermediates", f"stage{i + 1}", x)
    self.sow("intermediates", "pooled", x)
    logits = _layers.head(self.num_classes, self.head_kernel_init, self.dtype)(x)
    return jnp.asarray(logits, jnp.float32)


# Architecture arguments of each registered name (see `kdjax.models.get`).
VARIANTS: dict[str, dict[str, Any]] = {"mlp": {}, "mlp_tiny": {"hidden_sizes": (16,)}}
