"""Tests of the results report on small synthetic workdirs (result.json files written here)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from kdjax import report, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A table config as configs/results_*.py write them: stages, a teacher from another
# workdir, and get_report next to get_config.
CONFIG = textwrap.dedent('''\
    from configs import base


    def get_config(dataset="cifar10"):
      config = base.get_config()
      config.dataset.name = dataset
      config.num_seeds = 3
      config.teacher_dirs.teacher = {"model": "resnet20", "directory": TEACHER}
      config.stages = base.stages()
      config.stages.scratch = base.stage("resnet8", "scratch", num_steps=100)
      config.stages.kd = base.stage("resnet8", "kd", ("teacher",), num_steps=100)
      config.stages.annealing_1 = base.stage("resnet8", "annealing", ("teacher",),
                                             num_steps=100)
      config.stages.annealing_2 = base.stage("resnet8", "scratch", num_steps=50,
                                             init_from="annealing_1")
      config.stages.dkp = base.stage("resnet8", "dkp", ("teacher",), num_steps=100)
      config.stages.dkd = base.stage("resnet8", "dkd", ("teacher",), num_steps=100)
      return config


    def get_report(dataset="cifar10"):
      return {"title": f"{dataset}, resnet8 students", "notes": "Short schedules.",
              "rows": [
                  {"stage": "scratch", "label": "scratch", "paper": 88.44,
                   "source": "TAKD, Table 2", "protocol": "resnet110, 200 epochs"},
                  {"stage": "kd", "label": "KD", "paper": 88.45, "source": "TAKD, Table 2",
                   "protocol": "resnet110, 200 epochs"},
                  {"stage": "annealing_1", "label": "Annealing-KD I"},
                  {"stage": "annealing_2", "label": "Annealing-KD II", "paper": 89.44,
                   "source": "Annealing-KD, Table 1", "protocol": "resnet110, 200 epochs"},
                  {"stage": "dkp", "label": "DKP"},
                  {"stage": "dkd", "label": "DKD"},
              ]}
    ''')

COST = {"setup_seconds": 20.0, "train_seconds": 3000.0, "eval_seconds": 580.0, "runs": 2,
        "hardware": [{"backend": "cpu", "device_kind": "cpu", "device_count": 8,
                      "process_count": 1, "host_cpu_count": 2}], "untimed_steps": 0}


def _write_json(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f)


def _stage_record(num_steps, augmentation="none"):
  return {"stage": {"num_steps": num_steps},
          "dataset": {"name": "cifar10", "augmentation": augmentation, "batch_size": 128}}


def _finish(workdir, name, seeds, last, best, *, num_steps=100, teachers=("teacher",),
            teacher_accuracy=0.9, init_from="", old=False):
  """Writes a finished stage: its record and a result.json as the trainer writes them."""
  directory = trainer.stage_dir(workdir, name)
  _write_json(os.path.join(directory, trainer.STAGE_CONFIG_FILE), _stage_record(num_steps))
  result = {
      "stage": name, "model": "resnet8", "method": "kd", "teachers": list(teachers),
      "seeds": seeds, "last_accuracy": last, "best_accuracy": best,
      "best_step": [num_steps] * len(seeds), "num_steps": num_steps,
      "curve": {"step": [num_steps // 2, num_steps],
                "accuracy": [[b - 0.1 for b in best], last]},
      "teacher_accuracy": {t: teacher_accuracy for t in teachers},
      "teacher_cache": True, "nonfinite_steps": [0] * len(seeds)}
  if not old:  # the fields kdjax records since results hold their protocol and cost
    result.update(init_from=init_from, mixup=0.0, epochs=num_steps * 128 / 50000,
                  dataset={"name": "cifar10", "num_classes": 10, "num_train": 50000,
                           "num_test": 10000, "batch_size": 128, "augmentation": "none"},
                  cost=COST)
  _write_json(os.path.join(directory, trainer.RESULT_FILE), result)


@pytest.fixture
def runs(tmp_path):
  """A teacher workdir, and two student workdirs (seed 0 in one, seeds 1-2 in the other)."""
  teacher_workdir = str(tmp_path / "teacher")
  _finish(teacher_workdir, "teacher", [0], [0.9150], [0.9210], num_steps=7800, teachers=())
  export = trainer.export_dir(teacher_workdir, "teacher", 0, "last")
  _write_json(os.path.join(export, "provenance.json"),
              {"model": "resnet20", "num_classes": 10, "dataset": "cifar10",
               "stage": "teacher", "method": "scratch", "seed": 0, "step": 7800,
               "accuracy": 0.9150, "parameter_hash": "abc"})
  config_file = tmp_path / "table.py"
  config_file.write_text(f"TEACHER = {export!r}\n" + CONFIG)
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  _finish(a, "scratch", [0], [0.80], [0.81], teachers=())
  _finish(b, "scratch", [1, 2], [0.84, 0.85], [0.86, 0.88], teachers=())
  _finish(a, "kd", [0, 1], [0.83, 0.85], [0.84, 0.86])  # seed 2 missing
  _finish(a, "annealing_1", [0, 1, 2], [0.7, 0.7, 0.7], [0.7, 0.7, 0.7])
  _finish(a, "annealing_2", [0, 1, 2], [0.8, 0.8, 0.8], [0.8, 0.8, 0.8], num_steps=50,
          teachers=(), init_from="annealing_1")
  _finish(b, "dkd", [1, 2], [0.5, 0.6], [0.55, 0.65], old=True)  # before costs were recorded
  running = trainer.stage_dir(a, "dkp")  # started, not finished
  _write_json(os.path.join(running, trainer.STAGE_CONFIG_FILE), _stage_record(100))
  with open(os.path.join(running, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 40, "split": "eval", "accuracy": 0.4321}) + "\n")
  return str(config_file), [a, b]


def _rows(text):
  """The table's lines by their first cell."""
  rows = {}
  for line in text.splitlines():
    if line.startswith("| ") and not line.startswith("| method"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      rows[cells[0]] = cells
  return rows


def test_rows_show_last_and_best_as_mean_and_std_over_seeds_pooled_over_workdirs(runs):
  text, _ = report.table_markdown(report.load_table(*runs))
  rows = _rows(text)
  assert all(len(cells) == 11 for cells in rows.values())
  # scratch: seed 0 from workdir a, seeds 1-2 from b. By hand, over (80, 84, 85) and
  # (81, 86, 88): means 83.00 and 85.00, sample stds sqrt(7) = 2.65 and sqrt(13) = 3.61.
  assert rows["scratch"][:10] == [
      "scratch", "88.44 [1]", "resnet110, 200 epochs", "3", "83.00 ± 2.65", "85.00 ± 3.61",
      "0.3", "none", "—", "2.0 h"]  # two workdirs of 3600 s each
  assert rows["scratch"][10] == "cpu: 8× cpu, 2 host CPUs"
  assert rows["KD"][1] == "88.45 [1]"  # one source, one footnote
  assert rows["Annealing-KD II"][1] == "89.44 [2]"
  assert "[1] TAKD, Table 2" in text and "[2] Annealing-KD, Table 1" in text


def test_a_missing_seed_is_counted_not_hidden(runs):
  rows = _rows(report.table_markdown(report.load_table(*runs))[0])
  # Two of the config's three seeds: (83 + 85) / 2 = 84.00, std sqrt(2) = 1.41.
  assert rows["KD"][3:6] == ["2 of 3", "84.00 ± 1.41", "85.00 ± 1.41"]
  assert rows["KD"][8] == "90.00"  # the teacher's accuracy the trainer measured


def test_a_running_stage_is_shown_as_such_without_numbers(runs):
  text, plotted = report.table_markdown(report.load_table(*runs))
  cells = _rows(text)["DKP"]
  assert cells[3] == f"0 of 3 (running in `{runs[1][0]}`: step 40 of 100)"
  assert cells[4:] == ["—"] * 7
  assert "43.21" not in text  # its last evaluation is not a result
  assert "DKP" not in [r["label"] for r in plotted]


def test_a_record_without_cost_fields_shows_what_it_has(runs):
  cells = _rows(report.table_markdown(report.load_table(*runs))[0])["DKD"]
  assert cells[3:] == ["2 of 3", "55.00 ± 7.07", "60.00 ± 7.07", "100 steps", "none", "90.00",
                       "not recorded", "not recorded"]


def test_the_teacher_is_read_from_its_export_and_its_stage(runs):
  text, _ = report.table_markdown(report.load_table(*runs))
  line = next(line for line in text.splitlines() if line.startswith("- Teacher"))
  assert "resnet20, the last network of stage `teacher` (seed 0, step 7800)" in line
  assert "**91.50 %** test accuracy" in line
  assert "its stage's last 91.50 %, best 92.10 % (step 7800); 20.0 epochs" in line
  assert "60 min on cpu: 8× cpu, 2 host CPUs" in line


def test_annealing_stage_two_is_plotted_after_stage_one(runs):
  _, plotted = report.table_markdown(report.load_table(*runs))
  lines = {line.label: line for line in report.summary.panels(plotted)[0].lines}
  assert lines["Annealing-KD I"].x.tolist() == [50, 100]
  assert lines["Annealing-KD II"].x.tolist() == [125, 150]


def test_the_same_workdirs_give_the_same_files_byte_for_byte(runs, tmp_path):
  outputs = []
  for name in ("first", "second"):
    directory = tmp_path / name
    directory.mkdir()
    paths = report.write([report.load_table(*runs)], str(directory), "python -m launch.report")
    assert [os.path.basename(p) for p in paths] == ["results.md", "table.png"]
    outputs.append([open(p, "rb").read() for p in paths])
  assert outputs[0] == outputs[1]
  assert b"![cifar10, resnet8 students](table.png)" in outputs[0][0]


@pytest.mark.parametrize("spec, match", [
    ({"title": "", "rows": [{"stage": "kd", "label": "KD"}]}, "title=''"),
    ({"title": "T", "rows": []}, "rows=\\[\\]"),
    ({"title": "T", "rows": [{"stage": "fitnets", "label": "F"}]}, "stage='fitnets'"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD"}, {"stage": "dkp", "label": "KD"}]},
     "label='KD'"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": 0.88,
                              "source": "x"}]}, None),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": 188.0,
                              "source": "x"}]}, "paper=188.0"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "paper": 88.0}]}, "source"),
    ({"title": "T", "rows": [{"stage": "kd", "label": "KD", "papr": 88.0}]}, "papr"),
    ({"title": "T", "table": 1, "rows": [{"stage": "kd", "label": "KD"}]}, "table"),
])
def test_bad_specs_are_refused_naming_the_value(runs, spec, match):
  config = report.load_table(*runs).config
  if match is None:  # a fraction where a percentage belongs is still a valid number
    report.check_spec(spec, config)
    return
  with pytest.raises(ValueError, match=match):
    report.check_spec(spec, config)


def test_one_seed_in_two_workdirs_is_refused(runs):
  config_file, (a, b) = runs
  _finish(b, "kd", [1], [0.9], [0.9])
  with pytest.raises(ValueError, match="stage 'kd' has seeds \\[0, 1, 1\\]"):
    report.table_rows(report.load_table(config_file, [a, b]))


def test_binary_writes_the_report_and_refuses_a_bad_table(runs, tmp_path):
  config_file, (a, b) = runs
  out = tmp_path / "docs"
  out.mkdir()
  command = [sys.executable, "-m", "launch.report", f"--table={config_file}:cifar10={a},{b}",
             f"--output_dir={out}"]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
  assert done.stdout.split() == [str(out / "results.md"), str(out / "table_cifar10.png")]
  text = (out / "results.md").read_text()
  assert f"`python -m launch.report --table={config_file}:cifar10={a},{b} --output_dir={out}`" \
      in text
  bad = subprocess.run(command[:3] + [f"--table={config_file}"], cwd=REPO, capture_output=True,
                       text=True)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1].startswith(
      f"error: --table='{config_file}' must be CONFIG_FILE[:ARG]=WORKDIR")


def test_a_teacher_not_exported_yet_is_said_so(runs, tmp_path):
  config_file, workdirs = runs
  export = os.path.join(str(tmp_path / "teacher"), "stages", "teacher", "export", "seed0",
                        "last")
  os.remove(os.path.join(export, "provenance.json"))
  text, _ = report.table_markdown(report.load_table(config_file, workdirs))
  assert f"- Teacher `teacher`: no export in `{export}` yet." in text.splitlines()
