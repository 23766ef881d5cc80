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
  r"""FitNets' hint regressor: conv → BatchNorm → ReLU, mapping a student feature map onto
  the teacher's channel count.

  .. math:: r(f) = \mathrm{ReLU}(\mathrm{BN}(W * f + b))

  BatchNorm uses PyTorch's defaults (Flax ``momentum=0.9``, ``epsilon=1e-5``), as the
  models of ``kdjax.models`` do.

  Attributes:
    features: output channels (the teacher feature's channel count).
    kernel_size: the square kernel size (3, as RepDistiller's ``ConvReg`` for equal sizes).
    strides: the conv stride, to shrink the student's spatial size onto the teacher's.
    bn_axis_name: the ``pmap`` axis to synchronise BatchNorm statistics over, if any.
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps ``[B, H, W, C_s]`` to ``[B, H / strides, W / strides, features]``."""
    x = nn.Conv(self.features, (self.kernel_size,) * 2, strides=self.strides, padding="SAME")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=self.bn_axis_name)(x)
    return nn.relu(x)


@dataclasses.dataclass(frozen=True)
class AuxHead:
  """A trainable Linen module applied to one student feature.

  Attributes:
    module: a Linen module called as ``module(feature, train=...)``.
    source: the name of the student feature it reads (e.g. ``"stage2"``).
  """

  module: nn.Module
  source: str

  @property
  def network(self) -> networks.Network:
    return networks.from_linen(self.module)


def check_heads(heads: Mapping[str, AuxHead]) -> dict[str, AuxHead]:
  """Validates a name → ``AuxHead`` mapping and returns it as a dict.

  Raises:
    ValueError: on a head name that is ``"logits"``, or a head that is not an ``AuxHead``.
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

  Args:
    heads: name → ``AuxHead``.
    features: student feature name → array or ``jax.ShapeDtypeStruct``.
    rng: a PRNG key.

  Returns:
    ``(aux_params, aux_state)``, each a dict keyed by head name.
  """
  aux_params, aux_state = {}, {}
  for i, (name, head) in enumerate(sorted(heads.items())):
    feature = features[head.source]
    # Jitted: an op-by-op init compiles every random initialiser separately.
    init = jax.jit(lambda key, x, module=head.module: module.init(key, x, train=False))
    variables = init(jax.random.fold_in(rng, i), jnp.zeros(feature.shape, feature.dtype))
    aux_params[name], aux_state[name] = head.network.split(variables)
  return aux_params, aux_state
