"""Layer defaults shared by the model families (PyTorch-equivalent BatchNorm and inits)."""

from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = jax.nn.initializers.Initializer

# Kaiming-normal with fan_out, as `nn.init.kaiming_normal_(mode="fan_out")` in the PyTorch
# references (WRN and VGG write the same law by hand as N(0, 2 / (k * k * out))).
CONV_INIT: Initializer = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# He-normal for hidden Dense layers followed by a ReLU.
DENSE_INIT: Initializer = nn.initializers.he_normal()
# Classifier head: Flax's Dense default, and the base of `kdjax.initializers.zero_mean()`.
HEAD_INIT: Initializer = nn.initializers.lecun_normal()


def batch_norm(train: bool, dtype: Dtype, name: str | None = None,
               axis_name: str | None = None) -> nn.BatchNorm:
  """Returns a BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5).

  Args:
    train: whether to normalise with batch statistics and update ``batch_stats``.
    dtype: the computation dtype; scale and bias stay float32.
    name: the submodule name.
    axis_name: in training, also average the batch statistics over this ``jax.pmap`` /
      ``shard_map`` axis (synchronised BatchNorm: the global batch's statistics).

  Returns:
    An ``nn.BatchNorm`` over the last (channel) axis.
  """
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    param_dtype=jnp.float32,
    axis_name=axis_name if train else None,
    name=name,
  )


def conv(
  features: int,
  kernel_size: int | tuple[int, int],
  strides: int | tuple[int, int] = 1,
  *,
  use_bias: bool = False,
  dtype: Dtype,
  name: str | None = None,
) -> nn.Conv:
  """Returns an NHWC convolution padded like PyTorch's ``padding=kernel_size // 2``.

  Explicit symmetric padding (not ``"SAME"``) keeps stride-2 layers aligned with the
  PyTorch references, which pad one pixel on both sides.

  Args:
    features: the number of output channels.
    kernel_size: the kernel size, square (``3``) or ``(height, width)`` (``(1, 3)``: a 1×N
      filter that sees one row at a time).
    strides: the stride, square (``2``) or ``(height, width)``.
    use_bias: whether to add a bias (the ResNet/WRN references have none, VGG and the plain
      CNNs do).
    dtype: the computation dtype; the kernel stays float32.
    name: the submodule name.

  Returns:
    An ``nn.Conv`` with kaiming-normal (fan_out) kernel init and zero bias.
  """
  height, width = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
  return nn.Conv(
    features,
    (height, width),
    strides=(strides, strides) if isinstance(strides, int) else strides,
    padding=((height // 2, height // 2), (width // 2, width // 2)),
    use_bias=use_bias,
    kernel_init=CONV_INIT,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )


def head(num_classes: int, kernel_init: Initializer, dtype: Dtype) -> nn.Dense:
  """Returns the classifier ``nn.Dense`` named ``"head"`` (bias initialised to zero).

  Args:
    num_classes: the number of logits K.
    kernel_init: the initializer of the ``[features, K]`` kernel.
    dtype: the computation dtype; the kernel stays float32.

  Returns:
    An ``nn.Dense``.
  """
  return nn.Dense(
    num_classes, kernel_init=kernel_init, dtype=dtype, param_dtype=jnp.float32, name="head"
  )
