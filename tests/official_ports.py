"""NumPy ports of the official implementations kdjax reproduces, for tests to compare against.

Each port follows its source line by line (PyTorch calls replaced by their NumPy meaning) and
names the file it came from; the arithmetic runs in the dtype of its inputs, so a test can
run it in float64 or, where float64 itself cancels (T² · KL at T = 1e6), in np.longdouble.
PyTorch semantics used below: ``F.kl_div(log_q, p, size_average=False)`` is
``sum(p * (log p - log_q))`` over every element; ``nn.KLDivLoss()`` is the same divided by
the number of elements (batch × classes); ``F.cross_entropy`` is the batch mean.
"""

import json

import numpy as np


def softmax(x, axis=1):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=1):
  z = x - x.max(axis=axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def kl_div_sum(log_q, p):
  """``F.kl_div(log_q, p, size_average=False)`` (0 · log 0 taken as 0, as PyTorch does)."""
  safe_p = np.where(p > 0, p, 1)
  return np.sum(np.where(p > 0, p * (np.log(safe_p) - log_q), 0))


def kl_div_mean(log_q, p):
  """``nn.KLDivLoss()(log_q, p)``: the element-wise mean."""
  return kl_div_sum(log_q, p) / p.size


def cross_entropy(logits, target):
  """``F.cross_entropy(logits, target)``: the batch mean."""
  return -np.mean(log_softmax(logits)[np.arange(len(target)), target])


# megvii-research/mdistiller, mdistiller/distillers/DKD.py ---------------------------------


def _get_gt_mask(logits, target):
  mask = np.zeros(logits.shape, bool)
  mask[np.arange(len(target)), target] = True
  return mask


def _get_other_mask(logits, target):
  return ~_get_gt_mask(logits, target)


def cat_mask(t, mask1, mask2):
  t1 = (t * mask1).sum(axis=1, keepdims=True)
  t2 = (t * mask2).sum(axis=1, keepdims=True)
  return np.concatenate([t1, t2], axis=1)


def dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
  """mdistiller's ``dkd_loss``: the batch mean of α·TCKD + β·NCKD."""
  gt_mask = _get_gt_mask(logits_student, target)
  other_mask = _get_other_mask(logits_student, target)
  pred_student = softmax(logits_student / temperature)
  pred_teacher = softmax(logits_teacher / temperature)
  pred_student = cat_mask(pred_student, gt_mask, other_mask)
  pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
  log_pred_student = np.log(pred_student)
  tckd_loss = kl_div_sum(log_pred_student, pred_teacher) * temperature**2 / target.shape[0]
  pred_teacher_part2 = softmax(logits_teacher / temperature - 1000.0 * gt_mask)
  log_pred_student_part2 = log_softmax(logits_student / temperature - 1000.0 * gt_mask)
  nckd_loss = (kl_div_sum(log_pred_student_part2, pred_teacher_part2) * temperature**2
               / target.shape[0])
  return alpha * tckd_loss + beta * nckd_loss


def dkd_forward_train(logits_student, logits_teacher, target, epoch, *, ce_weight=1.0,
                      alpha=1.0, beta=8.0, temperature=4.0, warmup=20):
  """``DKD.forward_train``'s two losses at a (1-based) ``epoch``: (loss_ce, loss_kd)."""
  loss_ce = ce_weight * cross_entropy(logits_student, target)
  loss_dkd = min(epoch / warmup, 1.0) * dkd_loss(logits_student, logits_teacher, target,
                                                 alpha, beta, temperature)
  return loss_ce, loss_dkd


# mdistiller/engine/trainer.py (BaseTrainer.train / train_epoch) and engine/utils.py --------


def mdistiller_epochs_of_iterations(num_epochs, iterations_per_epoch):
  """The ``epoch`` each training iteration passes to the distiller, in order.

  ``epoch = 1; while epoch < EPOCHS + 1: train_epoch(epoch); epoch += 1``, and
  ``train_epoch`` runs one iteration per batch of the loader.
  """
  epochs = []
  epoch = 1
  while epoch < num_epochs + 1:
    epochs.extend([epoch] * iterations_per_epoch)
    epoch += 1
  return epochs


def mdistiller_learning_rate(epoch, lr=0.05, decay_stages=(150, 180, 210), decay_rate=0.1):
  """``adjust_learning_rate(epoch, cfg, optimizer)``, called at the start of each epoch."""
  steps = np.sum(epoch > np.asarray(decay_stages))
  if steps > 0:
    return lr * (decay_rate**steps)
  return lr


# imirzadeh/Teacher-Assistant-Knowledge-Distillation, train.py and search_space.json ------


def takd_loss(output, teacher_outputs, target, lambda_, T):
  """``TrainManager.train``'s loss with a teacher."""
  loss_sl = cross_entropy(output, target)
  loss_kd = kl_div_mean(log_softmax(output / T), softmax(teacher_outputs / T))
  return (1 - lambda_) * loss_sl + lambda_ * T * T * loss_kd


def takd_learning_rate(epoch, epochs, models_are_plane=False):
  """``TrainManager.adjust_learning_rate``, verbatim: ``epoch < int(epoch/2.0)`` is never
  true, so resnets train at 0.01, then 0.001 from ``int(epochs*3/4)``."""
  if models_are_plane:
    lr = 0.01
  else:
    if epoch < int(epoch / 2.0):
      lr = 0.1
    elif epoch < int(epochs * 3 / 4.0):
      lr = 0.1 * 0.1
    else:
      lr = 0.1 * 0.01
  return lr


TAKD_SEARCH_SPACE = json.loads("""
{ "lambda_student":{"_type":"quniform", "_value":[0.05, 1.0, 0.05]},
  "T_student":{"_type":"choice", "_value":[1, 2, 5, 10, 15, 20]},
  "seed":{"_type":"choice", "_value":[20, 31, 55]}
}""")
TAKD_TRIAL_COMMAND = "python3 train.py --epochs 160 --teacher resnet110 --student resnet8 --cuda 1"


# wonchulSon/DGKD, train.py ---------------------------------------------------------------


def dgkd_loss(student_output, teacher_outputs, ta_outputs, target, lambda_, T, dropped):
  """``TrainManager.train``'s loss; ``dropped`` lists the indices into ``loss_KD_list``
  (teacher first, then the assistants) that ``random.choice`` removed this mini-batch."""
  loss_sl = cross_entropy(student_output, target)
  loss_kd_list = [kl_div_mean(log_softmax(student_output / T), softmax(teacher_outputs / T))]
  for ta_output in ta_outputs:
    loss_kd_list.append(kl_div_mean(log_softmax(student_output / T), softmax(ta_output / T)))
  loss_kd_list = [loss for i, loss in enumerate(loss_kd_list) if i not in dropped]
  return (1 - lambda_) * loss_sl + lambda_ * T * T * sum(loss_kd_list)


DGKD_DEFAULTS = {"epochs": 160, "crop": False, "batch_size": 128, "learning_rate": 0.1,
                 "momentum": 0.9, "weight_decay": 1e-4, "T": 5, "lamb": 1.0, "drop_num": 1}


# HobbitLong/RepDistiller, models/util.py (ConvReg; mdistiller's distillers/_common.py is
# the same) --------------------------------------------------------------------------------


def conv2d(x, weight, bias, stride=1, padding=0):
  """``nn.Conv2d`` forward: x ``[N, C, H, W]``, weight ``[O, C, kh, kw]``."""
  x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  n, _, h, w = x.shape
  out_channels, _, kh, kw = weight.shape
  out_h, out_w = (h - kh) // stride + 1, (w - kw) // stride + 1
  out = np.zeros((n, out_channels, out_h, out_w), x.dtype)
  for i in range(out_h):
    for j in range(out_w):
      patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
      out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, weight)
  return out + bias[None, :, None, None]


def conv_transpose2d(x, weight, bias, stride=1, padding=0):
  """``nn.ConvTranspose2d`` forward: x ``[N, C, H, W]``, weight ``[C, O, kh, kw]``."""
  n, _, h, w = x.shape
  _, out_channels, kh, kw = weight.shape
  full = np.zeros((n, out_channels, (h - 1) * stride + kh, (w - 1) * stride + kw), x.dtype)
  for i in range(h):
    for j in range(w):
      full[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += np.einsum(
          "nc,cohw->nohw", x[:, :, i, j], weight)
  out = full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]
  return out + bias[None, :, None, None]


class ConvReg:
  """``ConvReg(s_shape, t_shape)``: its conv's parameters and its forward in eval mode.

  BatchNorm2d in eval mode with fresh running statistics (mean 0, variance 1, weight 1,
  bias 0) divides by sqrt(1 + 1e-5).
  """

  def __init__(self, s_shape, t_shape, use_relu=True):
    self.use_relu = use_relu
    s_N, s_C, s_H, s_W = s_shape
    t_N, t_C, t_H, t_W = t_shape
    if s_H == 2 * t_H:
      self.conv = ("conv", (t_C, s_C, 3, 3), 2, 1)
    elif s_H * 2 == t_H:
      self.conv = ("transpose", (s_C, t_C, 4, 4), 2, 1)
    elif s_H >= t_H:
      self.conv = ("conv", (t_C, s_C, 1 + s_H - t_H, 1 + s_W - t_W), 1, 0)
    else:
      raise NotImplementedError(f"student size {s_H}, teacher size {t_H}")
    self.out_channels = t_C

  def num_conv_parameters(self):
    return int(np.prod(self.conv[1])) + self.out_channels

  def forward(self, x, weight, bias):
    kind, _, stride, padding = self.conv
    fn = conv2d if kind == "conv" else conv_transpose2d
    x = fn(x, weight, bias, stride, padding) / np.sqrt(1 + 1e-5)
    return np.maximum(x, 0) if self.use_relu else x
