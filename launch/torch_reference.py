"""PyTorch reference of kdjax's CIFAR ResNets and KD step, for ``launch/benchmark.py``.

An optional dependency (``pip install kdjax[torch]``, i.e. ``torch==2.13.0``): nothing in
kdjax imports this module, and ``launch.benchmark`` imports it only with ``--torch``.

The models are the CIFAR "6n+2" ResNets of ``kdjax.models.resnet`` (RepDistiller's
``resnet.py``), layer for layer: a 3×3 stem conv (no bias) → BN → ReLU; three stages of n
BasicBlocks, widths 16/32/64, strides 1/2/2; a 1×1 conv + BN shortcut whenever the stride
or the width changes; global average pooling; a linear head. Parameter counts equal kdjax's
(``num_parameters``; resnet8: 78,042 with 10 classes). The KD step is the one kdjax's
benchmark times: teacher(s) in eval mode under ``torch.no_grad``, student in train mode,
loss ``(1 − α)·CE + α·T²·KL(p_t^T ‖ p_s^T)`` (batchmean), SGD with momentum.
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

DEPTHS = {"resnet8": 8, "resnet14": 14, "resnet20": 20, "resnet26": 26, "resnet32": 32,
          "resnet44": 44, "resnet56": 56, "resnet110": 110}


class BasicBlock(nn.Module):
  """Two 3×3 conv-BN layers with a residual connection, then ReLU (kdjax's ``BasicBlock``)."""

  def __init__(self, in_planes: int, planes: int, stride: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_planes != planes:
      self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                    nn.BatchNorm2d(planes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + self.shortcut(x))


class ResNet(nn.Module):
  """CIFAR ResNet of depth 6n+2 (kdjax's ``ResNet`` with widths 16/16/32/64)."""

  def __init__(self, depth: int, num_classes: int = 10,
               widths: Sequence[int] = (16, 16, 32, 64)):
    super().__init__()
    if depth < 8 or (depth - 2) % 6:
      raise ValueError(f"{depth=} must be 6n+2 with n >= 1, e.g. 8, 20, 56")
    blocks = (depth - 2) // 6
    self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                              nn.BatchNorm2d(widths[0]), nn.ReLU())
    layers, in_planes = [], widths[0]
    for width, stride in zip(widths[1:], (1, 2, 2), strict=True):
      for b in range(blocks):
        layers.append(BasicBlock(in_planes, width, stride if b == 0 else 1))
        in_planes = width
    self.stages = nn.Sequential(*layers)
    self.head = nn.Linear(widths[3], num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.stages(self.stem(x))
    return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def get(name: str, num_classes: int = 10) -> ResNet:
  """Builds the PyTorch twin of ``kdjax.models.get(name, num_classes)``.

  Raises:
    ValueError: for a name outside ``DEPTHS``.
  """
  if name not in DEPTHS:
    raise ValueError(f"no PyTorch reference for {name!r}; valid: {', '.join(DEPTHS)}.")
  return ResNet(DEPTHS[name], num_classes)


def num_parameters(model: nn.Module) -> int:
  """The number of trainable parameters (BatchNorm running statistics excluded)."""
  return sum(p.numel() for p in model.parameters())


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
  """``T²·KL(softmax(t/T) ‖ softmax(s/T))``, summed over classes, mean over the batch."""
  log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
  log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
  return temperature**2 * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


def make_kd_step(student: nn.Module,
                 teachers: Sequence[nn.Module],
                 *,
                 learning_rate: float = 0.1,
                 momentum: float = 0.9,
                 ce_weight: float = 0.1,
                 kd_weight: float = 0.9,
                 temperature: float = 4.0):
  """Returns ``step(images, labels) -> loss``: one SGD step of Hinton KD.

  With several teachers (DGKD's teacher and assistants) the KD term is summed over them, as
  DGKD's objective does when no teacher is dropped. With none, the step is plain CE
  training (weight 1).

  Args:
    student: the student, put in train mode.
    teachers: teacher networks, put in eval mode; their forward runs under ``no_grad``.
    learning_rate: SGD learning rate.
    momentum: SGD momentum.
    ce_weight: weight of the cross-entropy with labels.
    kd_weight: weight of the KD term.
    temperature: the KD temperature T.

  Returns:
    The step function; it returns the loss as a detached tensor.
  """
  for t in teachers:
    t.eval()
  cached_step = make_cached_kd_step(student, learning_rate=learning_rate, momentum=momentum,
                                    ce_weight=ce_weight if teachers else 1.0,
                                    kd_weight=kd_weight, temperature=temperature)

  def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
      teacher_logits = [t(images) for t in teachers]
    return cached_step(images, labels, teacher_logits)

  return step


def make_cached_kd_step(student: nn.Module,
                        *,
                        learning_rate: float = 0.1,
                        momentum: float = 0.9,
                        ce_weight: float = 0.1,
                        kd_weight: float = 0.9,
                        temperature: float = 4.0):
  """Returns ``step(images, labels, teacher_logits) -> loss``: KD from given teacher logits.

  ``teacher_logits`` is a sequence of ``[B, K]`` tensors (one per teacher, e.g. read from a
  cache); the KD term is summed over them; an empty sequence trains with CE alone. Other
  arguments as in ``make_kd_step``.
  """
  student.train()
  optimizer = torch.optim.SGD(student.parameters(), lr=learning_rate, momentum=momentum)

  def step(images: torch.Tensor, labels: torch.Tensor,
           teacher_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    logits = student(images)
    loss = ce_weight * F.cross_entropy(logits, labels)
    for t in teacher_logits:
      loss = loss + kd_weight * kd_loss(logits, t, temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()

  return step


def benchmark_steps(teacher_names: Sequence[str], student_name: str, measure: Sequence[str], *,
                    batch_size: int) -> dict[str, Callable[[], object]]:
  """The benchmark's steps in PyTorch, named ``torch_<step>``, on random CIFAR-10 data.

  ``torch_teacher`` (the teachers' forward under ``no_grad``), ``torch_student`` (the
  student's CE step), ``torch_kd`` and ``torch_cached`` (the KD step on precomputed teacher
  logits), for those of ``teacher``, ``student``, ``kd`` and ``cached`` in ``measure``.
  """
  torch.manual_seed(0)
  images = torch.randn(batch_size, 3, 32, 32)
  labels = torch.randint(0, 10, (batch_size,))
  teachers = [get(t).eval() for t in teacher_names]

  def forward():
    with torch.no_grad():
      return [t(images) for t in teachers]

  steps = {}
  if "teacher" in measure:
    steps["torch_teacher"] = forward
  if "student" in measure:
    student_step = make_kd_step(get(student_name), [])
    steps["torch_student"] = lambda: student_step(images, labels)
  if "kd" in measure:
    kd_step = make_kd_step(get(student_name), teachers)
    steps["torch_kd"] = lambda: kd_step(images, labels)
  if "cached" in measure:
    cached_logits = forward()
    cached_step = make_cached_kd_step(get(student_name))
    steps["torch_cached"] = lambda: cached_step(images, labels, cached_logits)
  return steps
