"""CIFAR-10: Pacemaker KD, a 3×3 resnet56 teacher → a 1×3 resnet8 student via a pacemaker.

Students built from 1×N filters (here 1×3: input consumed row by row, as on embedded
devices) learn poorly from an N×N teacher directly; Pacemaker KD (Son et al., arXiv
2003.03944) puts an intermediate "pacemaker" teacher between them. The paper leaves the
pacemaker's architecture open; kdjax's choice: the teacher's depth with the student's 1×N
filters (``resnet56_1x3``), so that the first step changes the filter shape at full capacity
and the second shrinks the network at a fixed filter shape — each step changes one thing.
Every step is Hinton KD (T = 4, CE 0.1 + KD 0.9). For comparison the config also trains the
student directly from the teacher and from scratch. Optimizer and augmentation of the
Annealing-KD lineage (``cifar10_teacher.py``).

  python -m launch.train --config=configs/cifar10_pacemaker.py --workdir=workdir/cifar10
"""

from configs import base
from configs import cifar10_teacher as c10


def get_config():
  config = c10.cifar10_config()
  config.num_seeds = 3
  epochs, sgd = 200, c10.sgd
  config.stages.teacher_resnet56 = c10.teacher_stage("resnet56")
  config.stages.pacemaker_resnet56_1x3 = base.stage(
      "resnet56_1x3", "kd", ("teacher_resnet56",), num_epochs=epochs, num_seeds=1,
      optimizer=sgd())
  config.stages.pacemaker_kd_resnet8_1x3 = base.stage(
      "resnet8_1x3", "kd", ("pacemaker_resnet56_1x3",), num_epochs=epochs, optimizer=sgd())
  config.stages.kd_resnet8_1x3 = base.stage("resnet8_1x3", "kd", ("teacher_resnet56",),
                                            num_epochs=epochs, optimizer=sgd())
  config.stages.scratch_resnet8_1x3 = base.stage("resnet8_1x3", "scratch", num_epochs=epochs,
                                                 optimizer=sgd())
  return config
