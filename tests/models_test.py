"""Tests for kdjax.models: parameter counts, shapes, BatchNorm state, sown features, registry."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import initializers, models
from kdjax.models import plain

CIFAR = (2, 32, 32, 3)
DIGITS = (2, 8, 8, 1)
K = 10

# (name, K, number of entries in "params"). DESIGN §7 for the ResNets and WRNs (they equal
# RepDistiller's PyTorch models, whose convs have no bias); the rest counted by hand from the
# PyTorch definitions: TAKD's `ConvNetMaker` with `plane_cifar10_book` (K = 10) and
# `plane_cifar100_book` (K = 100), conv 9·in·out + out, BN 2·out, Linear in·out + out; and
# RepDistiller's `vgg8_bn` / `vgg13_bn` (convs with bias, BN, one Linear 512·K + K).
PARAM_COUNTS = [
  ("resnet8", 10, 78_042),
  ("resnet8", 100, 83_892),
  ("resnet14", 10, 175_258),
  ("resnet20", 10, 272_474),
  ("resnet20", 100, 278_324),
  ("resnet26", 10, 369_690),
  ("resnet32", 10, 466_906),
  ("resnet32", 100, 472_756),
  ("resnet44", 10, 661_338),
  ("resnet56", 10, 855_770),
  ("resnet56", 100, 861_620),
  ("resnet110", 10, 1_730_714),
  ("resnet110", 100, 1_736_564),
  # 1×3 filters (Pacemaker KD's students): every 3×3 conv has 3·in·out weights instead of 9
  # (the row averaging before a stride-2 1×3 block has no parameters).
  ("resnet8_1x3", 10, 28_602),
  ("resnet8_1x3", 100, 34_452),
  ("resnet20_1x3", 10, 94_010),
  ("resnet56_1x3", 10, 290_234),
  ("resnet110_1x3", 100, 590_420),
  ("resnet8x4", 10, 1_210_410),
  ("resnet8x4", 100, 1_233_540),
  ("resnet32x4", 10, 7_410_730),
  ("resnet32x4", 100, 7_433_860),
  ("wrn_16_2", 100, 703_284),
  ("wrn_40_2", 100, 2_255_156),
  ("plane2", 10, 13_082),
  ("plane2", 100, 215_172),
  ("plane4", 10, 37_338),
  ("plane4", 100, 475_652),
  ("plane6", 10, 82_778),
  ("plane6", 100, 1_107_204),
  ("plane8", 10, 327_962),
  ("plane8", 100, 1_246_276),
  ("plane10", 10, 2_487_850),
  ("plane10", 100, 2_931_460),
  ("vgg8", 10, 3_918_858),
  ("vgg8", 100, 3_965_028),
  ("vgg13", 10, 9_416_010),
  ("vgg13", 100, 9_462_180),
]

# Feature shapes for a batch of two; K = 100 for plane6 selects TAKD's CIFAR-100 layout.
FEATURE_SHAPES = {
  ("resnet8", 10): {
    "stem": (2, 32, 32, 16),
    "stage1": (2, 32, 32, 16),
    "stage2": (2, 16, 16, 32),
    "stage3": (2, 8, 8, 64),
    "pooled": (2, 64),
  },
  ("resnet32x4", 10): {
    "stem": (2, 32, 32, 32),
    "stage1": (2, 32, 32, 64),
    "stage2": (2, 16, 16, 128),
    "stage3": (2, 8, 8, 256),
    "pooled": (2, 256),
  },
  ("wrn_40_2", 10): {
    "stem": (2, 32, 32, 16),
    "stage1": (2, 32, 32, 32),
    "stage2": (2, 16, 16, 64),
    "stage3": (2, 8, 8, 128),
    "pooled": (2, 128),
  },
  ("vgg13", 10): {
    "stem": (2, 32, 32, 64),
    "stage1": (2, 16, 16, 128),
    "stage2": (2, 8, 8, 256),
    "stage3": (2, 4, 4, 512),
    "stage4": (2, 4, 4, 512),
    "pooled": (2, 512),
  },
  ("plane2", 10): {"stage1": (2, 32, 32, 16), "stage2": (2, 16, 16, 16), "pooled": (2, 1024)},
  ("plane6", 100): {
    "stage1": (2, 32, 32, 32),
    "stage2": (2, 16, 16, 64),
    "stage3": (2, 8, 8, 128),
    "pooled": (2, 8 * 8 * 128),
  },
  ("plane10", 10): {
    "stage1": (2, 32, 32, 32),
    "stage2": (2, 16, 16, 64),
    "stage3": (2, 8, 8, 128),
    "stage4": (2, 4, 4, 256),
    "pooled": (2, 128),
  },
  ("mlp", 10): {"stage1": (2, 128), "pooled": (2, 128)},
}

# Models run for real (compiled and executed): the smallest of each family, a deeper ResNet
# and a plain CNN with a hidden FC layer; the others are checked abstractly above.
REAL = ("resnet8", "resnet20", "wrn_16_1", "plane2", "plane8", "vgg8", "mlp")


def _init_key() -> jax.Array:
  """An RBG key: XLA compiles its initializers in ~1 s where threefry takes ~10 s on CPU."""
  return jax.random.key(0, impl="rbg")


def _input_shape(name: str) -> tuple[int, ...]:
  return DIGITS if name == "mlp" else CIFAR


def _abstract_init(model, shape):
  """Variables as ShapeDtypeStructs, without running the initializers."""
  return jax.eval_shape(
    functools.partial(model.init, train=False),
    jax.random.key(0),
    jax.ShapeDtypeStruct(shape, jnp.float32),
  )


def _count(params) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


@functools.cache
def _real(name: str):
  """(model, variables, x) for a real run; the head uses the zero-mean init."""
  model = models.get(name, K, head_kernel_init=initializers.zero_mean())
  x = jax.random.normal(jax.random.key(1), _input_shape(name))
  variables = jax.jit(functools.partial(model.init, train=False))(_init_key(), x)
  return model, variables, x


@pytest.mark.parametrize(("name", "num_classes", "expected"), PARAM_COUNTS)
def test_param_count(name, num_classes, expected):
  variables = _abstract_init(models.get(name, num_classes), CIFAR)
  assert _count(variables["params"]) == expected


@pytest.mark.parametrize("name", models.names())
def test_shapes_and_feature_names(name):
  model = models.get(name, K)
  shape = _input_shape(name)
  variables = _abstract_init(model, shape)
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  apply = functools.partial(model.apply, train=True, mutable=["batch_stats", "intermediates"])
  logits, state = jax.eval_shape(apply, variables, x)
  chex.assert_shape(logits, (2, K))
  assert logits.dtype == jnp.float32
  assert jax.tree.structure(state["batch_stats"]) == jax.tree.structure(variables["batch_stats"])
  features = state["intermediates"]
  assert sorted(features) == sorted(model.feature_names)
  assert model.feature_names[-1] == "pooled"
  assert all(len(sown) == 1 for sown in features.values())
  chex.assert_shape(features["pooled"][0], (2, None))
  maps = [features[n][0] for n in model.feature_names[:-1]]
  assert all(f.shape[0] == 2 and f.ndim in (2, 4) for f in maps)
  spatial = [f.shape[1] for f in maps if f.ndim == 4]
  assert spatial == sorted(spatial, reverse=True)
  # Eval mode must not write batch_stats: tracing with nothing mutable would raise.
  eval_logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  chex.assert_shape(eval_logits, (2, K))


@pytest.mark.parametrize(("name", "num_classes"), FEATURE_SHAPES)
def test_feature_shapes(name, num_classes):
  model = models.get(name, num_classes)
  shape = _input_shape(name)
  variables = _abstract_init(model, shape)
  apply = functools.partial(model.apply, train=False, mutable=["intermediates"])
  _, state = jax.eval_shape(apply, variables, jax.ShapeDtypeStruct(shape, jnp.float32))
  shapes = {n: f[0].shape for n, f in state["intermediates"].items()}
  assert shapes == FEATURE_SHAPES[(name, num_classes)]


def test_vgg_pools_after_block3_only_for_larger_inputs():
  model = models.get("vgg8", K)
  shape = (2, 64, 64, 3)
  variables = _abstract_init(model, shape)
  apply = functools.partial(model.apply, train=False, mutable=["intermediates"])
  _, state = jax.eval_shape(apply, variables, jax.ShapeDtypeStruct(shape, jnp.float32))
  assert state["intermediates"]["stage3"][0].shape == (2, 8, 8, 512)
  assert state["intermediates"]["stage4"][0].shape == (2, 4, 4, 512)


@pytest.mark.parametrize("name", REAL)
def test_train_step_updates_batch_stats(name):
  model, variables, x = _real(name)
  apply = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
  logits, state = apply(variables, x)
  chex.assert_shape(logits, (2, K))
  chex.assert_tree_all_finite((logits, state))
  changed = jax.tree.map(
    lambda new, old: bool(np.any(new != old)), state["batch_stats"], variables["batch_stats"]
  )
  assert jax.tree.leaves(changed) and all(jax.tree.leaves(changed))


@pytest.mark.parametrize("name", REAL)
def test_eval_uses_running_averages(name):
  model, variables, x = _real(name)
  apply = jax.jit(functools.partial(model.apply, train=False))
  logits = apply(variables, x)
  chex.assert_shape(logits, (2, K))
  chex.assert_tree_all_finite(logits)
  # Running averages make each example's logits independent of the rest of the batch.
  chex.assert_trees_all_close(apply(variables, x[:1]), logits[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", REAL)
def test_zero_mean_head(name):
  _, variables, _ = _real(name)
  kernel = variables["params"]["head"]["kernel"]
  chex.assert_shape(kernel, (None, K))
  np.testing.assert_allclose(kernel.mean(axis=-1), 0.0, atol=1e-6)
  assert np.abs(kernel).max() > 0.0
  np.testing.assert_array_equal(variables["params"]["head"]["bias"], 0.0)


def test_default_head_is_not_zero_mean():
  model = models.get("mlp", K)
  variables = jax.jit(functools.partial(model.init, train=False))(_init_key(), jnp.zeros(DIGITS))
  assert np.abs(variables["params"]["head"]["kernel"].mean(axis=-1)).max() > 1e-3


def test_bfloat16_computation_keeps_float32_params_and_logits():
  model = models.get("resnet8", K, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(1), CIFAR)
  variables = jax.jit(functools.partial(model.init, train=False))(_init_key(), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  apply = functools.partial(model.apply, train=True, mutable=["batch_stats", "intermediates"])
  logits, state = jax.jit(apply)(variables, x)
  assert logits.dtype == jnp.float32
  chex.assert_tree_all_finite(logits)
  assert state["intermediates"]["stage3"][0].dtype == jnp.bfloat16


def test_names():
  names = models.names()
  assert len(set(names)) == len(names)
  for name in ("resnet8", "resnet110", "resnet32x4", "wrn_40_2", "plane10", "vgg13", "mlp"):
    assert name in names


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"unknown model 'resnet9'; valid: resnet8, resnet14, ") as e:
    models.get("resnet9", K)
  assert all(name in str(e.value) for name in models.names())


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True, "10", None])
def test_bad_num_classes(num_classes):
  with pytest.raises(ValueError, match="num_classes"):
    models.get("resnet8", num_classes)


def test_numpy_int_num_classes():
  assert models.get("resnet8", np.int64(7)).num_classes == 7


def test_architecture_fields_cannot_be_overridden():
  with pytest.raises(TypeError, match="depth"):
    models.get("resnet8", K, depth=20)


def test_plane_book():
  assert models.get("plane2", 10).convs == plain.PLANE_CIFAR10_BOOK[2][0]
  assert models.get("plane2", 100).convs == plain.PLANE_CIFAR100_BOOK[2][0]
  assert models.get("plane2", 10, book="cifar100").convs == plain.PLANE_CIFAR100_BOOK[2][0]
  with pytest.raises(ValueError, match="book"):
    models.get("plane2", 10, book="imagenet")


def test_mlp_hidden_sizes():
  model = models.get("mlp", K, hidden_sizes=(16, 8, 4))
  assert model.feature_names == ("stage1", "stage2", "pooled")
  variables = _abstract_init(model, DIGITS)
  assert _count(variables["params"]) == 64 * 16 + 16 * 8 + 8 * 4 + 2 * (16 + 8 + 4) + 4 * K + K


@pytest.mark.parametrize(
  ("model", "match"),
  [
    (models.ResNet(num_classes=K, depth=9), "depth"),
    (models.WideResNet(num_classes=K, depth=18), "depth"),
    (models.VGG(num_classes=K, blocks=((64,),)), "blocks"),
    (models.PlainCNN(num_classes=K, convs=(16, "P")), "convs"),
  ],
)
def test_invalid_architecture(model, match):
  with pytest.raises(ValueError, match=match):
    _abstract_init(model, CIFAR)


def test_one_by_n_filters_see_one_row():
  """A 1×3 ResNet's logits at stride 1 mix no rows: the stem's output row r reads row r only."""
  model = models.get("resnet8_1x3", K)
  x = jax.random.normal(jax.random.key(0), CIFAR)
  variables = jax.jit(functools.partial(model.init, train=False))(_init_key(), x)

  def stem(images):
    _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    return state["intermediates"]["stem"][0]

  changed = x.at[:, 5].add(1.0)  # one image row
  difference = np.abs(np.asarray(stem(changed) - stem(x))).sum(axis=(0, 2, 3))
  assert difference[5] > 0 and np.all(np.delete(difference, 5) == 0)
  kernels = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
             if "kernel" in jax.tree_util.keystr(path) and leaf.ndim == 4]
  assert all(shape[:2] in ((1, 3), (1, 1)) for shape in kernels)


@pytest.mark.parametrize("name", ["resnet8_1x3", "resnet20_1x3"])
def test_one_by_n_logits_read_every_input_row(name):
  """No row is skipped by a stride-2 stage: each input row has a non-zero gradient on the logits."""
  model = models.get(name, K)
  x = jax.random.normal(jax.random.key(0), (1, *CIFAR[1:]))
  variables = jax.jit(functools.partial(model.init, train=False))(_init_key(), x)
  jacobian = jax.jit(jax.jacrev(lambda images: model.apply(variables, images, train=False)))(x)
  per_row = np.abs(np.asarray(jacobian)).sum(axis=(0, 1, 2, 4, 5))  # [logits, B, H, W, C] → H
  assert per_row.shape == (CIFAR[1],)
  assert np.all(per_row > 0), np.flatnonzero(per_row == 0)


@pytest.mark.parametrize("name, shape", [("resnet8", CIFAR), ("wrn_16_1", CIFAR), ("vgg8", CIFAR),
                                         ("plane4", CIFAR), ("mlp", DIGITS)])
def test_bn_axis_name_synchronises_every_batchnorm(name, shape):
  """Each BatchNorm, nested blocks included, averages its statistics over the named axis."""
  model = models.get(name, K, bn_axis_name="devices")
  x = jnp.zeros(shape)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  num_batchnorms = len(jax.tree.leaves(variables["batch_stats"])) // 2  # mean and var each

  def train_apply(variables, images):
    return model.apply(variables, images, train=True, mutable=["batch_stats"])

  sync = jax.vmap(train_apply, in_axes=(None, 0), axis_name="devices")
  assert str(jax.make_jaxpr(sync)(variables, x[None])).count("psum") == num_batchnorms
  # Evaluation uses the running averages: no collective, so it runs outside the axis too.
  jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
