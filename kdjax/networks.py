"""One pure interface for every model a step trains or consults: ``split`` and ``apply``.

A step needs a model as two pure functions::

    params, model_state = network.split(variables)
    outputs, new_model_state = network.apply(params, model_state, inputs, train=True,
                                             features=("stage2",), rng=key)

``params`` is what gradients flow into; ``model_state`` is everything else the model carries
(BatchNorm ``batch_stats``, NNX RNG counters). ``outputs`` is a dict with ``"logits"``
``[B, K]`` and one entry per requested feature; ``new_model_state`` is ``model_state``
updated by a training-mode call and unchanged by an eval-mode call.

Features are read by name. Linen models ``sow`` them into the ``"intermediates"``
collection (kdjax's models sow their stage outputs there, see ``kdjax.models``); NNX models
``self.sow(nnx.Intermediate, name, value)``; both are read only when asked for, so a step
that needs no features pays nothing for them. A name may be a ``/``-separated path into
nested submodules (``"block1/relu"``); with ``capture_intermediates`` a submodule's output is
read by the submodule's path (``"Dense_0"``).

Adapters: ``from_linen`` (a Linen module), ``from_nnx`` (an NNX graph definition, with
variables from ``nnx.split``) and ``from_function`` (a plain ``apply_fn(params, inputs)``).
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Any

from flax import linen as nn
from flax import nnx
import jax

LOGITS = "logits"

Outputs = dict[str, jax.Array]
# (params, model_state, inputs, *, train, features, rng) -> (outputs, new_model_state)
ApplyFn = Callable[..., tuple[Outputs, Any]]


@dataclasses.dataclass(frozen=True)
class Network:
  """A model as a pair of pure functions.

  Step builders and ``create_train_state`` take a ``Network`` (or anything ``as_network``
  converts); build one with ``from_linen``, ``from_nnx`` or ``from_function``, or directly
  when a model needs its own split of variables or its own way of reading features.

  Attributes:
    split: ``variables -> (params, model_state)``; ``variables`` is the model's native
      variable pytree (a Linen variables dict, an NNX ``State``, a params pytree).
    apply: ``(params, model_state, inputs, *, train, features=(), rng=None) ->
      (outputs, new_model_state)``; ``outputs`` maps ``"logits"`` and each requested
      feature name to an array; ``rng`` feeds stochastic layers in training mode.
    name: a label for error messages.

  Example:
    >>> def apply(params, model_state, inputs, *, train, features=(), rng=None):
    ...   return {"logits": inputs @ params["w"]}, model_state
    >>> net = Network(split=lambda v: (v["params"], {}), apply=apply, name="linear")
    >>> params, state = net.split({"params": {"w": jnp.ones((2, 3))}})
    >>> outputs, new_state = net.apply(params, state, jnp.ones((4, 2)), train=True)
    >>> outputs["logits"].shape, new_state
    ((4, 3), {})
  """

  split: Callable[[Any], tuple[Any, Any]]
  apply: ApplyFn
  name: str = "network"


def from_linen(module: nn.Module,
               *,
               train_argument: str | None = "train",
               rng_collections: Sequence[str] = ("dropout",),
               capture_intermediates: bool | Callable[[nn.Module, str], bool] = False
               ) -> Network:
  """Adapts a Flax Linen module.

  Training-mode calls make every non-``params`` collection mutable (``batch_stats``, ...)
  and return them updated; features are read from the ``"intermediates"`` collection.

  Args:
    module: the Linen module; ``module.apply(variables, x, train=...)`` returns logits (or
      a dict with ``"logits"``).
    train_argument: the keyword that switches training mode (``None``: the module has none).
    rng_collections: the RNG streams a training-mode call receives, split from ``rng``.
    capture_intermediates: passed to ``module.apply`` when features are requested, to read
      submodule outputs that are not sown (``True`` or a filter ``(module, method) -> bool``).

  Returns:
    A ``Network`` whose variables are the dict returned by ``module.init``; its ``apply``
    returns ``{"logits": [B, K], feature: ...}``.

  Raises:
    TypeError: if ``module`` is not a Linen module.
    ValueError: (from the returned ``split``) on variables without a ``"params"``
      collection; (from ``apply``) when the module returns a dict without ``"logits"`` or
      a requested feature was not sown exactly once.

  Example:
    >>> import jax.numpy as jnp
    >>> net = from_linen(nn.Dense(3), train_argument=None)
    >>> variables = nn.Dense(3).init(jax.random.key(0), jnp.ones((1, 2)))
    >>> params, state = net.split(variables)
    >>> net.apply(params, state, jnp.ones((4, 2)), train=False)[0]["logits"].shape
    (4, 3)
  """
  if not isinstance(module, nn.Module):
    raise TypeError(f"from_linen needs a flax.linen.Module; got {type(module).__name__}.")
  name = type(module).__name__

  def split(variables):
    if not isinstance(variables, Mapping) or "params" not in variables:
      keys = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
      raise ValueError(f"{name}: Linen variables need a 'params' collection; got {keys}.")
    model_state = {k: v for k, v in variables.items() if k not in ("params", "intermediates")}
    return variables["params"], model_state

  def apply(params, model_state, inputs, *, train, features=(), rng=None):
    mutable = (list(model_state) if train else []) + (["intermediates"] if features else [])
    kwargs = {train_argument: train} if train_argument else {}
    if train and rng is not None and rng_collections:
      keys = jax.random.split(rng, len(rng_collections))
      kwargs["rngs"] = dict(zip(rng_collections, keys, strict=True))
    if features and capture_intermediates:
      kwargs["capture_intermediates"] = capture_intermediates
    result = module.apply({"params": params, **model_state}, inputs,
                          mutable=mutable or False, **kwargs)
    out, updated = result if mutable else (result, {})
    updated = dict(updated)
    intermediates = updated.pop("intermediates", {})
    new_state = {**model_state, **updated}
    return _outputs(name, out, intermediates, features), new_state

  return Network(split=split, apply=apply, name=name)


def from_nnx(graphdef: nnx.GraphDef) -> Network:
  """Adapts a Flax NNX model through its graph definition (``nnx.split``/``nnx.merge``).

  The variables are the ``State`` of ``graphdef, variables = nnx.split(model)``; ``params``
  are its ``nnx.Param`` leaves and ``model_state`` the rest. Each call merges a fresh model
  (pure: the caller's model object is never mutated), selects training or eval mode with
  ``nnx.view(deterministic=..., use_running_average=...)``, reads sown
  ``nnx.Intermediate`` features with ``nnx.capture``, and splits the updated state back out.
  Stochastic layers draw from the model's own ``nnx.Rngs`` (part of ``model_state``), so
  ``rng`` is unused.

  Args:
    graphdef: the graph definition from ``nnx.split(model)``.

  Returns:
    A ``Network``; its ``apply`` returns ``{"logits": [B, K], feature: ...}``.

  Raises:
    TypeError: if ``graphdef`` is not an ``nnx.GraphDef``.
    ValueError: (from the returned ``apply``) when the model returns a dict without
      ``"logits"`` or a requested feature was not sown exactly once.

  Example:
    >>> import jax.numpy as jnp
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> graphdef, variables = nnx.split(model)
    >>> net = from_nnx(graphdef)
    >>> params, state = net.split(variables)
    >>> net.apply(params, state, jnp.ones((4, 2)), train=False)[0]["logits"].shape
    (4, 3)
  """
  if not isinstance(graphdef, nnx.GraphDef):
    raise TypeError(f"from_nnx needs an nnx.GraphDef (from nnx.split); got "
                    f"{type(graphdef).__name__}.")
  name = "nnx model"

  def split(variables):
    return nnx.split_state(variables, nnx.Param, ...)

  def apply(params, model_state, inputs, *, train, features=(), rng=None):
    del rng
    model = nnx.merge(graphdef, params, model_state, copy=True)  # never mutate the inputs
    model = nnx.view(model, deterministic=not train, use_running_average=not train,
                     raise_if_not_found=False)
    # Capturing always keeps sown values out of the model state, requested or not.
    out, intermediates = nnx.capture(model, nnx.Intermediate)(inputs)
    intermediates = nnx.to_pure_dict(intermediates) if features else {}
    new_state = nnx.split(model, nnx.Param, ...)[2] if train else model_state
    return _outputs(name, out, intermediates, features), new_state

  return Network(split=split, apply=apply, name=name)


def from_function(apply_fn: Callable[[Any, jax.Array], Any], name: str = "function") -> Network:
  """Adapts a stateless ``apply_fn(params, inputs)`` returning logits or a dict of outputs.

  The variables are the params themselves; there is no model state and no training mode.
  Features are the returned dict's other entries.

  Args:
    apply_fn: returns logits ``[B, K]`` or a dict with ``"logits"`` and named features.
    name: a label for error messages.

  Returns:
    A ``Network``; its ``apply`` returns ``{"logits": [B, K], feature: ...}``.

  Raises:
    ValueError: (from the returned ``apply``) when ``apply_fn`` returns a dict without
      ``"logits"`` or without a requested feature.

  Example:
    >>> import jax.numpy as jnp
    >>> net = from_function(lambda w, x: x @ w)
    >>> params, state = net.split(jnp.ones((2, 3)))
    >>> net.apply(params, state, jnp.ones((4, 2)), train=True)[0]["logits"].shape
    (4, 3)
  """

  def split(variables):
    return variables, {}

  def apply(params, model_state, inputs, *, train, features=(), rng=None):
    del train, rng
    out = apply_fn(params, inputs)
    extra = {k: v for k, v in out.items() if k != LOGITS} if isinstance(out, Mapping) else {}
    return _outputs(name, out, extra, features), model_state

  return Network(split=split, apply=apply, name=name)


def as_network(model: Network | nn.Module | nnx.GraphDef) -> Network:
  """Returns ``model`` as a ``Network``: Linen modules and NNX graph definitions with defaults.

  Every API that takes a model calls it, so a ``Network``, a Linen module and an NNX
  ``GraphDef`` are interchangeable there. Call ``from_linen`` or ``from_nnx`` yourself for
  non-default options (e.g. a module without a ``train`` argument).

  Args:
    model: a ``Network`` (returned as is), a Linen module (``from_linen(model)``) or an NNX
      graph definition (``from_nnx(model)``).

  Returns:
    The ``Network``.

  Raises:
    TypeError: for anything else (wrap a plain function with ``from_function``).

  Example:
    >>> from kdjax import models
    >>> net = as_network(models.get("mlp_tiny", 10))
    >>> net.name, as_network(net) is net
    ('MLP', True)
    >>> as_network(lambda params, inputs: inputs)
    Traceback (most recent call last):
    ...
    TypeError: expected a kdjax.networks.Network, a flax.linen.Module or an nnx.GraphDef; got
    function (wrap a plain apply function with networks.from_function).
  """
  if isinstance(model, Network):
    return model
  if isinstance(model, nn.Module):
    return from_linen(model)
  if isinstance(model, nnx.GraphDef):
    return from_nnx(model)
  raise TypeError(
      f"expected a kdjax.networks.Network, a flax.linen.Module or an nnx.GraphDef; got "
      f"{type(model).__name__} (wrap a plain apply function with networks.from_function).")


def _outputs(name: str, out, intermediates: Mapping, features: Sequence[str]) -> Outputs:
  """Builds ``{"logits": ..., feature: ...}`` from a model's return value and sown values."""
  if isinstance(out, Mapping):
    if LOGITS not in out:
      raise ValueError(f"{name} returned a dict without 'logits'; keys: {sorted(out)}.")
    out = out[LOGITS]
  outputs = {LOGITS: out}
  for feature in features:
    if feature == LOGITS:
      raise ValueError(f"feature name {LOGITS!r} is reserved for the model's return value.")
    outputs[feature] = _lookup(name, intermediates, feature)
  return outputs


def _lookup(name: str, intermediates: Mapping, feature: str) -> jax.Array:
  """Reads one sown value by its ``/``-separated path."""
  node = intermediates
  for part in feature.split("/"):
    if not isinstance(node, Mapping) or part not in node:
      raise ValueError(
          f"{name} has no feature {feature!r}; sown features: "
          f"{', '.join(map(repr, _paths(intermediates))) or 'none'}.")
    node = node[part]
  if isinstance(node, Mapping) and "__call__" in node:  # captured submodule output
    node = node["__call__"]
  if isinstance(node, tuple | list):
    if len(node) != 1:
      raise ValueError(f"{name} sowed {feature!r} {len(node)} times in one call; the step "
                       f"needs exactly one value per feature.")
    node = node[0]
  if isinstance(node, Mapping):
    raise ValueError(f"{name}: {feature!r} names a group of features; pick one of "
                     f"{', '.join(map(repr, _paths(node)))}.")
  return node


def _paths(tree: Mapping, prefix: str = "") -> list[str]:
  paths = []
  for key, value in tree.items():
    if key == "__call__":
      paths.append(prefix.rstrip("/") or "__call__")
    elif isinstance(value, Mapping):
      paths.extend(_paths(value, f"{prefix}{key}/"))
    else:
      paths.append(f"{prefix}{key}")
  return paths
