"""CIFAR-10: resnet110 → resnet8 by reverse KL, Jensen–Shannon and total variation.

Each stage is CE 0.1 + 0.9·T²·D(p_t, p_s) at T = 4, the Hinton KD recipe of
``cifar10_kd.py`` with the forward KL swapped for another divergence: reverse KL
(mode-seeking), the generalized Jensen–Shannon divergence at β = 0.5 (the symmetric JSD;
β = 0 is forward KL, β = 1 reverse KL) and total variation (bounded).

  python -m launch.train --config=configs/cifar10_divergences.py --workdir=workdir/cifar10

Reference: KD (forward KL) 88.45, scratch 88.44 in this lineage.
"""

from configs import base
from configs import cifar10_teacher as c10


def get_config():
  config = c10.cifar10_config()
  config.num_seeds = 3
  config.stages.teacher_resnet110 = c10.teacher_stage("resnet110")
  for divergence in ("reverse_kl", "jensen_shannon", "total_variation"):
    config.stages[f"{divergence}_resnet8"] = base.stage(
        "resnet8", "divergence", ("teacher_resnet110",), num_epochs=200,
        optimizer=c10.sgd(), loss=dict(divergence=divergence, beta=0.5))
  return config
