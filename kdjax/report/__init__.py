r"""The results report: tables of methods from finished stages, set against the papers' numbers.

``python -m launch.report`` writes ``docs/results.md`` and one plot per table with it. A
table is data that lives with the config that trains its stages: the config file defines,
next to ``get_config``, a ``get_report`` taking the same optional argument and returning

.. code-block:: python

   {"title": "CIFAR-10, resnet8 students",
    "notes": "Markdown shown under the title (optional).",
    "rows": [{"stage": "kd",  # a stage of get_config()'s config.stages
              "label": "KD",  # the method's name in the table
              # the paper's number (%) with its source and protocol, or None for none
              "paper": 88.45, "source": "TAKD (Mirzadeh et al., 2020), Table 2",
              "protocol": "resnet110 → resnet8, 200 epochs, crop + flip, best epoch",
              # optional: the zoomed plot panels that draw the row (default: its model's)
              "panels": ["resnet8", "resnet8: DKP grid"]},
             ...],
    # optional: the papers' claims this table tests (kdjax.claims says how they are judged)
    "claims": [{"claim": "DKP beats KD",  # the claim, as the paper makes it
                "kind": "beats",  # or "equals", which needs "tolerance" (points, per seed)
                "stages": ["dkp_uniform", "dkp_tail"],  # rows of this table; the best is used
                "baseline": "kd",  # a row of this table
                "source": "the DKP paper"},  # optional
               ...]}

Every other number comes from the workdirs that ran the config: a row's stage is read from
each workdir given for the table (``WORKDIR/stages/NAME``), its seeds pooled over them. A
row shows, as mean ± sample std over seeds (in %),

.. math::
   \bar a = \frac1S \sum_s a_s, \qquad
   \mathrm{std} = \sqrt{\frac{1}{S - 1} \sum_s (a_s - \bar a)^2},

the accuracy of the last network and of the best evaluation, the seeds found (``2 of 3``
when a seed is missing), epochs, augmentation, the accuracy of the stage's teachers as the
trainer measured it, the wall time (everything the runs of all the stage's seeds took,
summed over resumed runs: setup, train steps with their compilation, evaluations,
checkpoint saves and exports) and the hardware. A stage without ``result.json`` is shown
as running (with its last logged step) or not started, never with a number; so is a stage
whose ``stage_config.json`` differs from the table's config (a result of an earlier
version of it: other steps, method, a loss field the method reads or a dataset field, a
record of another format, or a teacher retrained since), shown as stale. Workdirs pooled
into one row must hold runs of one protocol (stage config, teachers and their accuracy,
evaluation steps); the report refuses others. Teachers given
by ``config.teacher_dirs`` (exports of another workdir) are described above the table from
their export's provenance record; their accuracy is shown once their stage's
``result.json`` is beside the export (``STAGE/export/seed<i>/<kind>``).

The report opens with what the tables say of the papers' claims: per claim and table, the
verdict (:mod:`kdjax.claims`) with the difference of the rows' mean last accuracies and its
standard error, or the rows it waits for.

The same workdirs give the same files, byte for byte: nothing depends on the date, the
machine or the order of directory listings.

One concept per module: ``spec`` (a table's spec, checked and loaded: ``Table``,
``check_spec``, ``load_table``), ``runs`` (what the workdirs hold of each row:
``table_rows``), ``tables`` (a table's Markdown: ``table_markdown``), ``verdicts`` (the
claims section: ``claims_markdown``) and ``document`` (the files: ``plot_file``,
``write``).
"""

from kdjax.report.document import REPORT_FILE, plot_file, write
from kdjax.report.runs import table_rows
from kdjax.report.spec import SPEC_FUNCTION, Table, check_spec, load_table
from kdjax.report.tables import table_markdown
from kdjax.report.verdicts import claims_markdown

__all__ = ["REPORT_FILE", "SPEC_FUNCTION", "Table", "check_spec", "claims_markdown",
           "load_table", "plot_file", "table_markdown", "table_rows", "write"]
