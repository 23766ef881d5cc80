"""Tests of kdjax/heads.py: FitNets' regressor is RepDistiller's ConvReg."""

import jax
import jax.numpy as jnp
import numpy as np
import official_ports as ports
import pytest

from kdjax import heads, models


@pytest.mark.parametrize("student_hw, teacher_hw", [
    ((8, 8), (8, 8)),  # 1×1 conv
    ((8, 8), (4, 4)),  # 3×3 conv, stride 2
    ((4, 4), (8, 8)),  # 4×4 transposed conv, stride 2
    ((8, 6), (6, 4)),  # 3×3 conv, no padding
])
def test_regressor_is_convreg(student_hw, teacher_hw):
  """Same parameter count and, with the conv's weights copied over, the same outputs."""
  s_c, t_c = 3, 5
  x = np.random.default_rng(0).normal(size=(2, *student_hw, s_c)).astype(np.float32)
  regressor = heads.ConvRegressor(features=t_c, spatial_size=teacher_hw)
  variables = regressor.init(jax.random.key(0), x, train=False)
  kernel = np.asarray(variables["params"]["conv"]["kernel"], np.float64)
  bias = np.asarray(variables["params"]["conv"]["bias"], np.float64)
  reference = ports.ConvReg((2, s_c, *student_hw), (2, t_c, *teacher_hw))
  assert kernel.size + bias.size == reference.num_conv_parameters()
  # Flax keeps kernels [kh, kw, in, out] (transposed convs: [kh, kw, out, in], the kernel of
  # the conv they transpose); PyTorch [out, in, kh, kw] (transposed: [in, out, kh, kw]).
  weight = kernel.transpose(3, 2, 0, 1)
  expected = reference.forward(x.transpose(0, 3, 1, 2).astype(np.float64), weight, bias)
  actual = regressor.apply(variables, x, train=False)
  np.testing.assert_allclose(np.asarray(actual).transpose(0, 3, 1, 2), expected, rtol=1e-4,
                             atol=1e-5)


def test_resnet56_to_resnet20_hint_regressor_has_convregs_parameter_count():
  """mdistiller's FitNet hint (stage 2, 32 channels at 16×16 on both): a 1×1 conv."""
  images = jnp.zeros((1, 32, 32, 3))

  def stage2(model):
    module = models.get(model, 100)
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), images, train=False))
    _, captured = jax.eval_shape(
        lambda v: module.apply(v, images, train=False, mutable=["intermediates"]), variables)
    return captured["intermediates"]["stage2"][0].shape

  student, teacher = stage2("resnet20"), stage2("resnet56")
  regressor = heads.ConvRegressor(features=teacher[-1], spatial_size=teacher[1:3])
  params = jax.eval_shape(lambda: regressor.init(jax.random.key(0), jnp.zeros(student),
                                                 train=False))["params"]["conv"]
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  reference = ports.ConvReg(student[:1] + student[3:] + student[1:3],
                            teacher[:1] + teacher[3:] + teacher[1:3])
  assert count == reference.num_conv_parameters() == 32 * 32 + 32


def test_a_smaller_student_map_other_than_half_is_refused():
  regressor = heads.ConvRegressor(features=4, spatial_size=(8, 8))
  with pytest.raises(ValueError, match=r"\(6×6\) is smaller than the teacher's \(8×8\)"):
    regressor.init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)), train=False)
