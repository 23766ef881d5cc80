"""Quickstart on the bundled handwritten digits: a teacher, then every method's student.

A convolutional teacher (resnet8) is distilled into a small MLP student by each method, and
the summary compares them with the same student trained from scratch. The assistant
(mlp, itself distilled from the teacher) makes the TAKD and DGKD chains. Runs in a few
minutes on 2 CPU cores:

  python -m launch.train --config=configs/quickstart.py --workdir=workdir/quickstart
"""

from configs import base


def get_config():
  config = base.get_config()
  config.dataset.name = "digits"
  config.dataset.batch_size = 64
  config.num_seeds = 3
  config.eval_every_steps = 100
  config.log_every_steps = 50
  config.checkpoint_every_steps = 200

  student = "mlp_tiny"
  steps = 600
  adam = base.optimizer(name="adam", learning_rate=3e-3, weight_decay=0.0, schedule="cosine")
  config.stages = base.stages()
  config.stages.teacher = base.stage("resnet8", "scratch", num_steps=1000, num_seeds=1,
                                     optimizer=base.optimizer(learning_rate=0.05))
  config.stages.assistant = base.stage("mlp", "kd", ("teacher",), num_steps=steps,
                                       num_seeds=1, optimizer=adam)
  config.stages.scratch = base.stage(student, "scratch", num_steps=steps, optimizer=adam)
  config.stages.kd = base.stage(student, "kd", ("teacher",), num_steps=steps, optimizer=adam)
  config.stages.dkp = base.stage(student, "dkp", ("teacher",), num_steps=steps, optimizer=adam)
  config.stages.annealing_1 = base.stage(student, "annealing", ("teacher",), num_steps=steps,
                                         optimizer=adam)
  config.stages.annealing_2 = base.stage(student, "scratch", num_steps=steps // 2,
                                         init_from="annealing_1", optimizer=adam)
  config.stages.takd = base.stage(student, "kd", ("assistant",), num_steps=steps,
                                  optimizer=adam)
  config.stages.dgkd = base.stage(student, "dgkd", ("teacher", "assistant"), num_steps=steps,
                                  optimizer=adam)
  return config
