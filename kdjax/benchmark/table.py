"""The benchmark's figures as ratios and as the table ``launch/benchmark.py`` prints.

A ratio of two medians taken in the same interleaved rounds (``time_interleaved``) is the
benchmark's headline: ``kd / (teacher + student)`` compares the fused KD step with its
physical limit (one teacher forward plus one student step), ``kd / torch_kd`` with
PyTorch's, ``sweep / (N × kd)`` the shared-teacher sweep with N separate steps.
"""

from collections.abc import Mapping
import os
import platform
from typing import Any

from kdjax.benchmark import steps as steps_lib
from kdjax.benchmark import timing


def _ratio(a: float | None, b: float | None) -> float | None:
  return None if a is None or b is None or b == 0 else a / b


def case_ratios(medians: Mapping[str, float], num_students: int,
                pipeline_images_per_s: float | None, batch_size: int) -> dict[str, float]:
  """The headline ratios of one case from its steps' medians (ms); missing ones are left out.

  Args:
    medians: step name (``STEP_NAMES``, ``torch_<name>``) → median milliseconds.
    num_students: the sweep's student count N.
    pipeline_images_per_s: the input pipeline's rate, or ``None``.
    batch_size: examples per step.

  Returns:
    ratio name → value, e.g. ``"kd / (teacher + student)"``.

  Example:
    >>> case_ratios({"teacher": 30.0, "student": 10.0, "kd": 44.0, "sweep": 120.0}, 4,
    ...             None, 128)
    {'kd / (teacher + student)': 1.1, 'sweep / (4 × kd)': 0.6818181818181818}
  """
  m = medians.get
  limit = None if m("teacher") is None or m("student") is None else m("teacher") + m("student")
  ratios = {
      "kd / (teacher + student)": _ratio(m("kd"), limit),
      "kd / torch_kd": _ratio(m("kd"), m("torch_kd")),
      "cached / torch_kd": _ratio(m("cached"), m("torch_kd")),
      f"sweep / ({num_students} × kd)": _ratio(m("sweep"), None if m("kd") is None
                                               else num_students * m("kd")),
      "teacher / torch_teacher": _ratio(m("teacher"), m("torch_teacher")),
      "student / torch_student": _ratio(m("student"), m("torch_student")),
      "student / naive": _ratio(m("student"), m("naive")),
      "student / student_1dev": _ratio(m("student"), m("student_1dev")),
      f"sweep_vmap / ({num_students} × kd)": _ratio(m("sweep_vmap"), None if m("kd") is None
                                                    else num_students * m("kd")),
      "cached / torch_cached": _ratio(m("cached"), m("torch_cached")),
  }
  if pipeline_images_per_s is not None and m("student"):
    ratios["pipeline img/s / student img/s"] = pipeline_images_per_s / (
        batch_size / (m("student") / timing.MS))
  return {k: v for k, v in ratios.items() if v is not None}


def machine() -> str:
  """The CPU's model name and count, e.g. ``"AMD EPYC 7763, 2 CPUs"``.

  Example:
    >>> machine().endswith(f"{os.cpu_count()} CPUs")
    True
  """
  try:
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), platform.processor())
  except OSError:
    model = platform.processor()
  return f"{model}, {os.cpu_count()} CPUs"


def format_table(results: Mapping[str, Any]) -> str:
  """The human-readable table of medians and ratios of a benchmark's results.

  Args:
    results: ``{"settings": {"num_students", "batch_size"}, "cases": {name: {"steps":
      {step: Timing.summary()}, "ratios", "rounds_kept", "rounds_run", "clean",
      "median_foreign_load", "compile_s"}}}``, optionally ``"pipeline"``
      (``time_pipeline``'s result) and ``"end_to_end"`` (``time_end_to_end``'s).

  Returns:
    One block per case (a row per step, with PyTorch's median and the ratio where timed),
    then the pipeline's and the end-to-end run's lines.

  Example:
    >>> step = {"median_ms": 40.0, "q25_ms": 39.0, "q75_ms": 41.0, "min_ms": 38.0,
    ...         "max_ms": 50.0}
    >>> case = {"steps": {"kd": step}, "ratios": {"kd / torch_kd": 0.8}, "rounds_kept": 5,
    ...         "rounds_run": 6, "clean": True, "median_foreign_load": 0.0,
    ...         "compile_s": {"kd": 2.5}}
    >>> print(format_table({"settings": {"num_students": 4, "batch_size": 128},
    ...                     "cases": {"resnet56 -> resnet8": case}}))
    <BLANKLINE>
    == resnet56 -> resnet8  (rounds: 5 of 6; median foreign load 0%; first call of (c) 2.5 s)
    step  JAX ms  IQR  min-max  torch ms  JAX/torch
    (c) fused KD step  40.0  39.0-41.0  38.0-50.0
    ratios: kd / torch_kd = 0.80
  """
  lines = []
  n = results["settings"]["num_students"]
  header = (f"{'step':<40} {'JAX ms':>8} {'IQR':>13} {'min-max':>13} {'torch ms':>9} "
            f"{'JAX/torch':>9}")
  for case_name, case in results["cases"].items():
    lines += ["", f"== {case_name}  (rounds: {case['rounds_kept']} of {case['rounds_run']}"
              f"{'' if case['clean'] else ', NOISY: too few quiet rounds'}; median foreign "
              f"load {case['median_foreign_load']:.0%}; first call of (c) "
              f"{case['compile_s'].get('kd', float('nan')):.1f} s)", header]
    steps = case["steps"]
    for name, label in steps_lib.STEP_NAMES.items():
      if name not in steps:
        continue
      s = steps[name]
      t = steps.get(f"torch_{name}")
      torch_ms = f"{t['median_ms']:9.1f}" if t else f"{'':9}"
      ratio = f"{s['median_ms'] / t['median_ms']:9.2f}" if t else f"{'':9}"
      lines.append(f"{label.format(n=n):<40} {s['median_ms']:8.1f} "
                   f"{s['q25_ms']:6.1f}-{s['q75_ms']:<6.1f} {s['min_ms']:6.1f}-{s['max_ms']:<6.1f} "
                   f"{torch_ms} {ratio}")
    lines.append("ratios: " + "; ".join(f"{k} = {v:.2f}" for k, v in case["ratios"].items()))
  pipeline = results.get("pipeline")
  if pipeline:
    lines += ["", f"(f) CIFAR-10 input pipeline (crop+flip, batch "
              f"{results['settings']['batch_size']}): {pipeline['images_per_s']:.0f} img/s "
              f"(median {pipeline['per_batch']['median_ms']:.1f} ms/batch over "
              f"{pipeline['batches']} batches; foreign load {pipeline['foreign_load']:.0%})"]
  e2e = results.get("end_to_end")
  if e2e:
    lines += ["", f"end to end, {e2e['case']}, real pipeline (crop+flip, "
              f"{e2e['pipeline_workers']} workers, at most {e2e['dispatch_depth']} steps in "
              f"flight): {e2e['images_per_s']:.0f} img/s, "
              f"{e2e['step_ms']:.1f} ms/step over {e2e['steps']} steps (foreign load "
              f"{e2e['foreign_load']:.0%})"]
  return "\n".join(lines)
