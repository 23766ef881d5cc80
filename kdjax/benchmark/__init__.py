"""Speed of kdjax's steps, as ratios against references timed in the same process.

``launch/benchmark.py`` is its command line; docs/benchmarks.md holds the figures. One job
per module: ``timing`` (interleaved rounds, each with the load other processes put on the
machine, and their summaries), ``steps`` (the timed steps of a teacher → student case),
``end_to_end`` (the input pipeline, and the trainer's train program fed by it) and
``table`` (the ratios and the printed table).
"""

from kdjax.benchmark.end_to_end import time_end_to_end, time_pipeline
from kdjax.benchmark.steps import STEP_NAMES, Case, jax_steps, objectives
from kdjax.benchmark.table import case_ratios, format_table, machine
from kdjax.benchmark.timing import LoadMeter, Timing, time_interleaved

__all__ = [
    "STEP_NAMES",
    "Case",
    "LoadMeter",
    "Timing",
    "case_ratios",
    "format_table",
    "jax_steps",
    "machine",
    "objectives",
    "time_end_to_end",
    "time_interleaved",
    "time_pipeline",
]
