"""CIFAR-10: KD and DKD with logit standardization, resnet110 → resnet8.

Both sides' logits are z-scored before the temperature (Sun et al., CVPR 2024); the
official recipe for it is a base temperature of 2 and a KD weight of 9 next to CE 0.1
(``--logit-stand --base-temp 2 --kd-weight 9``). For DKD the official ``tools/train.py``
sets α ← 9·α = 9 and β ← 9·α = 81 (the already multiplied α) and writes the base
temperature to the KD section, which DKD does not read: DKD keeps its own T = 4. This config
follows the code. The same switch,
``loss.logit_standardization``, applies to dgkd, ensemble and function_matching. Optimizer,
augmentation and teacher are those of ``cifar10_kd.py``, so the stages compare directly.

  python -m launch.train --config=configs/cifar10_logit_standardization.py --workdir=workdir/cifar10

Reference (CIFAR-100, resnet56 → resnet20): KD 70.66 → 71.43, DKD 71.97 → 72.32.
"""

from configs import base
from configs import cifar10_teacher as c10


def get_config():
  config = c10.cifar10_config()
  config.num_seeds = 3
  config.stages.teacher_resnet110 = c10.teacher_stage("resnet110")
  config.stages.kd_std_resnet8 = base.stage(
      "resnet8", "kd", ("teacher_resnet110",), num_epochs=200, optimizer=c10.sgd(),
      loss=dict(logit_standardization=True, temperature=2.0, ce_weight=0.1,
                kd_weight=9.0))
  config.stages.dkd_std_resnet8 = base.stage(
      "resnet8", "dkd", ("teacher_resnet110",), num_epochs=200, optimizer=c10.sgd(),
      loss=dict(logit_standardization=True, temperature=4.0, alpha=9.0,
                beta=81.0, warmup_epochs=20))
  return config
