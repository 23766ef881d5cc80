"""CIFAR-10: Continuation-KD, resnet110 → resnet8, in one stage.

ψ·CE + (1 − ψ)·max{0, mean_k (s_k − Φ·t_k)² − m·Φ}: Φ climbs 1/20, 2/20, …, 1 over the
first half of the stage (T_max = 20, as in the paper), ψ ramps CE's weight from 0 to 1 over
the first 150 of 200 epochs (the paper's ψ(i) = i/150), margin m = 1 (the paper's value is
not given in what we could read: tune it). The best checkpoint is kept, as in the paper.
Optimizer and augmentation of the Annealing-KD lineage (``cifar10_teacher.py``).

  python -m launch.train --config=configs/cifar10_continuation.py --workdir=workdir/cifar10

Reference: Continuation-KD 90.21 (Annealing-KD 89.44, KD 88.45, scratch 88.44).
"""

from configs import base
from configs import cifar10_teacher as c10


def get_config():
  config = c10.cifar10_config()
  config.num_seeds = 3
  config.stages.teacher_resnet110 = c10.teacher_stage("resnet110")
  config.stages.continuation_resnet8 = base.stage(
      "resnet8", "continuation", ("teacher_resnet110",), num_epochs=200,
      optimizer=c10.sgd(),
      loss=dict(max_temperature=20, anneal_fraction=0.5,
                ramp_fraction=150 / 200, margin=1.0))
  return config
