"""CIFAR-100: mdistiller's KD and DKD recipe for one teacher-student pair.

mdistiller (``configs/cifar100/kd.yaml``, ``configs/cifar100/dkd/*.yaml`` and
``mdistiller/engine/cfg.py``), whose teachers are RepDistiller's, trained the same way:
240 epochs, batch 64, SGD lr 0.05 momentum 0.9 weight decay 5e-4, LR ×0.1 after epochs 150,
180 and 210, crop + flip, evaluated every epoch (the best epoch is reported).

- KD: 0.1·CE + 0.9·T²·KL, T = 4, KL summed over classes (``.sum(1).mean()``);
- DKD: CE + min(epoch/20, 1)·(α·TCKD + β·NCKD), epochs from 1, α = 1, T = 4, β per pair.

Pass the pair after the colon:

  python -m launch.train --config=configs/cifar100_mdistiller.py:res56_res20 \\
      --workdir=workdir/cifar100_b64
  python -m launch.train --config=configs/cifar100_mdistiller.py:res32x4_res8x4 \\
      --workdir=workdir/cifar100_b64
  python -m launch.train --config=configs/cifar100_mdistiller.py:wrn40_2_wrn_16_2 \\
      --workdir=workdir/cifar100_b64

References (DKD paper, Table 1): resnet56 → resnet20 KD 70.66, DKD 71.97; resnet32x4 →
resnet8x4 KD 73.33, DKD 76.32; wrn_40_2 → wrn_16_2 KD 74.92, DKD 76.24.
"""

import ml_collections

from configs import base
from configs import cifar100_resnet8 as c100

EPOCHS = 240
BATCH_SIZE = 64
DECAY_EPOCHS = (150, 180, 210)
# pair -> (teacher, student, DKD beta), from configs/cifar100/dkd/<pair>.yaml.
PAIRS = {
    "res56_res20": ("resnet56", "resnet20", 2.0),
    "res32x4_res8x4": ("resnet32x4", "resnet8x4", 8.0),
    "wrn40_2_wrn_16_2": ("wrn_40_2", "wrn_16_2", 6.0),
}


def sgd() -> ml_collections.ConfigDict:
  return base.optimizer(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
                        schedule="step", decay_at=tuple(e / EPOCHS for e in DECAY_EPOCHS),
                        decay_factor=0.1)


def get_config(pair: str = "res32x4_res8x4"):
  if pair not in PAIRS:
    raise ValueError(f"unknown pair {pair!r}; valid: {', '.join(PAIRS)}.")
  teacher, student, beta = PAIRS[pair]
  config = c100.cifar100_config()
  config.dataset.augmentation = "crop_flip"
  config.dataset.batch_size = BATCH_SIZE
  config.num_seeds = 3
  teacher_stage = f"teacher_{teacher}"
  config.stages[teacher_stage] = base.stage(teacher, "scratch", num_epochs=EPOCHS, num_seeds=1,
                                            optimizer=sgd())
  config.stages[f"kd_{student}"] = base.stage(
      student, "kd", (teacher_stage,), num_epochs=EPOCHS, optimizer=sgd(),
      loss=dict(temperature=4.0, ce_weight=0.1, kd_weight=0.9))
  config.stages[f"dkd_{student}"] = base.stage(
      student, "dkd", (teacher_stage,), num_epochs=EPOCHS, optimizer=sgd(),
      loss=dict(alpha=1.0, beta=beta, temperature=4.0, warmup_epochs=20))
  return config
