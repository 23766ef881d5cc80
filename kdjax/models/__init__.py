"""Model zoo: CIFAR ResNets (3×3 and 1×3 filters), Wide ResNets, VGGs, TAKD's plain CNNs and
a small MLP.

Every model is a Flax Linen module called as
``model.apply(variables, x, train=..., mutable=[...])`` on NHWC inputs ``[B, H, W, C]`` and
returns float32 logits ``[B, num_classes]``. All share:

* BatchNorm with PyTorch's defaults (Flax ``momentum=0.9`` is PyTorch's ``momentum=0.1``;
  ``epsilon=1e-5``), so ``variables`` has ``params`` and ``batch_stats``; ``train=True``
  needs ``mutable=["batch_stats"]``, ``train=False`` uses the running averages.
* ``head_kernel_init``: the init of the final Dense kernel (``kdjax.initializers.zero_mean()``
  for equal-mean heads); its bias starts at zero.
* ``dtype``: the computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32.
* Stage features sown into ``"intermediates"`` under the names in ``model.feature_names``
  (shallow to deep), read with ``mutable=["intermediates"]`` as
  ``state["intermediates"][name][0]`` (Flax returns the collection with sorted keys, so
  iterate over ``feature_names`` for depth order); the last name is always ``"pooled"``,
  the vector fed to the head. See each family's module docstring.

Example:
  >>> import functools
  >>> import jax, jax.numpy as jnp
  >>> from kdjax import models
  >>> model = models.get("resnet8", num_classes=10)
  >>> x = jnp.zeros((2, 32, 32, 3))
  >>> # jax.eval_shape runs init and apply on shapes only; call them directly for arrays.
  >>> variables = jax.eval_shape(functools.partial(model.init, train=False),
  ...                            jax.random.key(0), x)
  >>> sum(p.size for p in jax.tree.leaves(variables["params"]))
  78042
  >>> logits, state = jax.eval_shape(
  ...     functools.partial(model.apply, train=True, mutable=["batch_stats", "intermediates"]),
  ...     variables, x)
  >>> sorted(state["intermediates"]) == sorted(model.feature_names)
  True
"""

from collections.abc import Callable
import functools
import numbers
from typing import Any

from flax import linen as nn

from kdjax.models import mlp, plain, resnet, vgg, wrn
from kdjax.models.mlp import MLP
from kdjax.models.plain import PlainCNN
from kdjax.models.resnet import ResNet
from kdjax.models.vgg import VGG
from kdjax.models.wrn import WideResNet

__all__ = ["MLP", "VGG", "PlainCNN", "ResNet", "WideResNet", "get", "names"]


def _fixed(cls: type[nn.Module], arch: dict[str, Any]) -> Callable[..., nn.Module]:
  """Returns a builder ``(num_classes, **kwargs) -> cls(num_classes, **arch, **kwargs)``."""

  def build(num_classes: int, **kwargs: Any) -> nn.Module:
    return cls(num_classes=num_classes, **arch, **kwargs)

  return build


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
  **{name: _fixed(ResNet, arch) for name, arch in resnet.VARIANTS.items()},
  **{name: _fixed(WideResNet, arch) for name, arch in wrn.VARIANTS.items()},
  **{f"plane{d}": functools.partial(plain.plane, d) for d in plain.PLANE_CIFAR10_BOOK},
  **{name: _fixed(VGG, arch) for name, arch in vgg.VARIANTS.items()},
  **{name: _fixed(MLP, arch) for name, arch in mlp.VARIANTS.items()},
}


def names() -> tuple[str, ...]:
  """Returns the registered model names, in registration order.

  Use it to list what ``get`` accepts, e.g. to validate a config or build a CLI's choices.

  Returns:
    A tuple of names: the ResNets, Wide ResNets, plain CNNs, VGGs and MLPs.

  Example:
    >>> from kdjax import models
    >>> models.names()[:3], len(models.names())
    (('resnet8', 'resnet14', 'resnet20'), 28)
    >>> {"resnet32x4", "wrn_40_2", "plane4", "vgg13", "mlp_tiny"} <= set(models.names())
    True
  """
  return tuple(_REGISTRY)


def get(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds a registered model.

  The way to get a teacher or student by name (e.g. from a config); construct the family's
  class (``ResNet``, ``WideResNet``, ...) directly for an unregistered architecture.

  Args:
    name: one of ``names()``, e.g. ``"resnet32x4"``, ``"wrn_40_2"``, ``"plane4"``, ``"mlp"``.
    num_classes: the number of logits K, a positive int.
    **kwargs: further module fields: ``head_kernel_init``, ``dtype``, ``hidden_sizes``
      (mlp), ``book`` (plane*: ``"cifar10"`` or ``"cifar100"`` layout). Fields that define a
      registered architecture (e.g. ``depth``) cannot be overridden: that raises TypeError.

  Returns:
    The unbound Linen module, mapping images ``[B, H, W, C]`` to logits
    ``[B, num_classes]``.

  Raises:
    ValueError: if ``name`` is not registered (the message lists the valid names),
      ``num_classes`` is not a positive int, or (plane*) ``book`` is unknown.
    TypeError: on a keyword that overrides the architecture (e.g. ``depth``) or is not a
      field of the model.

  Example:
    >>> import functools
    >>> from kdjax import models
    >>> model = models.get("mlp_tiny", 10)
    >>> type(model).__name__, model.num_classes, model.hidden_sizes
    ('MLP', 10, (16,))
    >>> x = jnp.zeros((2, 8, 8, 1))
    >>> variables = jax.eval_shape(functools.partial(model.init, train=False),
    ...                            jax.random.key(0), x)
    >>> jax.eval_shape(functools.partial(model.apply, train=False), variables, x).shape
    (2, 10)
    >>> models.get("resnet9", 10)
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'resnet9'; valid: resnet8, resnet14, ..., mlp, mlp_tiny
    >>> models.get("resnet8", 10, depth=20)
    Traceback (most recent call last):
    ...
    TypeError: ...got multiple values for keyword argument 'depth'
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(_REGISTRY)}")
  if (
    not isinstance(num_classes, numbers.Integral)
    or isinstance(num_classes, bool)
    or num_classes < 1
  ):
    raise ValueError(f"{num_classes=} must be a positive int")
  return _REGISTRY[name](int(num_classes), **kwargs)
