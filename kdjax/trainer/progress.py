"""What a stage has measured so far: a ``Progress`` value, saved with every checkpoint.

The training loop (``kdjax.trainer.loop``) carries it from step to step and replaces it
after each evaluation or skipped non-finite step; a resumed run restores it from the
checkpoint, so best accuracies, curves and cost continue where they stopped.
"""

import dataclasses
from typing import Any

from kdjax.trainer import cost as cost_lib


@dataclasses.dataclass(frozen=True)
class Progress:
  """What a stage has measured so far, per student; saved with every checkpoint.

  Attributes:
    best_accuracy: the best test accuracy of each student (-1 before any evaluation).
    best_step: the step of each student's best accuracy.
    curve: ``{"step": [...], "accuracy": [[per student], ...]}``, one entry per evaluation.
    nonfinite_steps: the skipped non-finite steps of each student.
    cost: what the stage's runs have cost so far (``kdjax.trainer.cost``): wall seconds of
      setup, training, evaluation and checkpoints, the count of runs, their hardware.

  Example:
    >>> progress = Progress.start(num_students=2).evaluated(10, [0.5, 0.7])
    >>> progress.best_accuracy, progress.curve["step"]
    ((0.5, 0.7), [10])
  """

  best_accuracy: tuple[float, ...]
  best_step: tuple[int, ...]
  curve: dict[str, list[Any]]
  nonfinite_steps: tuple[int, ...]
  cost: dict[str, Any]

  @classmethod
  def start(cls, num_students: int) -> "Progress":
    """Nothing measured yet."""
    return cls((-1.0,) * num_students, (0,) * num_students, {"step": [], "accuracy": []},
               (0,) * num_students, cost_lib.nothing_spent())

  @classmethod
  def from_json(cls, value: dict[str, Any]) -> "Progress":
    """The progress a checkpoint saved (``to_json``)."""
    return cls(tuple(value["best_accuracy"]), tuple(value["best_step"]), value["curve"],
               tuple(value["nonfinite_steps"]), value["cost"])

  def to_json(self) -> dict[str, Any]:
    """The progress as JSON, as checkpoints save it."""
    return {"best_accuracy": list(self.best_accuracy), "best_step": list(self.best_step),
            "curve": self.curve, "nonfinite_steps": list(self.nonfinite_steps),
            "cost": self.cost}

  def evaluated(self, step: int, accuracy: list[float]) -> "Progress":
    """The progress after an evaluation at ``step`` with these accuracies."""
    improved = [a > b for a, b in zip(accuracy, self.best_accuracy, strict=True)]
    return dataclasses.replace(
        self,
        best_accuracy=tuple(a if up else b
                            for a, b, up in zip(accuracy, self.best_accuracy, improved,
                                                strict=True)),
        best_step=tuple(step if up else s for s, up in zip(self.best_step, improved,
                                                            strict=True)),
        curve={"step": [*self.curve["step"], step],
               "accuracy": [*self.curve["accuracy"], list(accuracy)]})

  def skipped(self, counts: list[int]) -> "Progress":
    """The progress after ``counts`` more skipped non-finite steps per student."""
    return dataclasses.replace(self, nonfinite_steps=tuple(
        a + b for a, b in zip(self.nonfinite_steps, counts, strict=True)))
