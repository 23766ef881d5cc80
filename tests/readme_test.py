"""The README's promises: its Python examples run, its Quickstart holds two commands, and its
Results section links the report and the command that regenerates it."""

import configparser
import contextlib
import io
import os
import re
import subprocess
import sys

import jax.numpy as jnp
import optax
import pytest

from kdjax import report, trainer, transforms

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _blocks(language: str) -> list[str]:
  with open(README) as f:
    return re.findall(rf"^```{language}\n(.*?)^```", f.read(), flags=re.S | re.M)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_example_runs(index):
  exec(compile(_blocks("python")[index], f"README.md python block {index}", "exec"), {})


def test_quickstart_has_exactly_two_commands():
  with open(README) as f:
    text = f.read()
  quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
  commands = re.findall(r"^```bash\n(.*?)^```", quickstart, flags=re.S | re.M)
  assert len(commands) == 2
  assert all(len(c.strip().splitlines()) == 1 for c in commands)
  assert "launch.train --config=configs/quickstart.py" in commands[0]
  assert "pytest" in commands[1]


def _report_command() -> str:
  """The README's command that regenerates docs/results.md, on one line."""
  with open(README) as f:
    text = f.read()
  section = text.split("## Results", 1)[1].split("\n## ", 1)[0]
  assert "[`docs/results.md`](docs/results.md)" in section
  (command,) = [c for c in re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
                if c.startswith("python -m launch.report")]
  return " ".join(command.replace("\\\n", " ").split())


def test_results_section_links_the_report_and_a_command_that_loads_its_tables():
  tables = re.findall(r"--table=(\S+)=(\S+)", _report_command())
  assert tables
  root = os.path.dirname(README)
  for config_file, workdirs in tables:
    path, _, arg = config_file.partition(":")
    table = report.load_table(os.path.join(root, path) + (f":{arg}" if arg else ""),
                              [os.path.join(root, w) for w in workdirs.split(",")])
    assert table.spec["rows"]


def test_the_committed_report_is_what_the_committed_runs_give(tmp_path):
  # The README's command, run on the records under docs/results/runs/, writes
  # docs/results.md byte for byte (below the line naming the command, which names no
  # --output_dir when it writes into docs/).
  root = os.path.dirname(README)
  command = _report_command()
  subprocess.run([sys.executable, *command.split()[1:], f"--output_dir={tmp_path}"],
                 cwd=root, check=True, capture_output=True)
  with open(os.path.join(root, "docs", "results.md")) as f:
    committed = f.read().split("\n", 3)
  regenerated = (tmp_path / "results.md").read_text().split("\n", 3)
  assert command in committed[2]
  assert committed[3] == regenerated[3]


def test_printed_values_match_the_readme():
  # The first example prints a negative total loss, which the text after it explains.
  (block,) = [b for b in _blocks("python") if "losses.dkp(" in b]
  (expected,) = re.findall(r"^print\(.*\)  # (.+)$", block, flags=re.M)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    exec(compile(block, "README.md losses example", "exec"), {})
  assert printed.getvalue().strip() == expected
  assert float(expected) < 0
  with open(README) as f:
    assert "The total is negative, and that is expected" in f.read()


def test_every_extra_the_readme_installs_exists():
  with open(README) as f:
    text = f.read()
  config = configparser.ConfigParser()
  config.read(os.path.join(os.path.dirname(README), "setup.cfg"))
  extras = {k: v.split() for k, v in config["options.extras_require"].items()}
  named = re.findall(r"pip install (?:-\S+ )*'\.\[(\w+)\]'", text)
  assert "tensorboard" in named
  assert set(named) <= set(extras)
  # The README's tensorboard command needs the package that provides it.
  assert "tensorboard --logdir" in text
  assert any(r.startswith("tensorboard") for r in extras["tensorboard"])


def test_output_transforms_are_not_documented_as_chaining_with_the_optimizer():
  # They need the teacher's logits, which an optimizer's update never receives.
  with open(README) as f:
    text = f.read()
  assert "with anything" not in text
  params = {"w": jnp.ones((2, 3))}
  chained = optax.chain(transforms.dkp(4.0, 0.5), optax.sgd(0.1))
  with pytest.raises(TypeError, match="teacher_logits"):
    chained.update(params, chained.init(params), params)


def test_the_config_written_outside_the_repository_is_valid_for_the_installed_binary():
  (block,) = [b for b in _blocks("python")
              if "from kdjax import config as base" in b and "def get_config" in b]
  namespace = {}
  exec(compile(block, "README.md config example", "exec"), namespace)
  trainer.validate(namespace["get_config"]())
  config = configparser.ConfigParser()
  config.read(os.path.join(os.path.dirname(README), "setup.cfg"))
  (script,) = re.findall(r"^(\S+) = kdjax.launch.train:run$",
                         config["options.entry_points"]["console_scripts"], flags=re.M)
  with open(README) as f:
    assert f"{script} --config=my_config.py" in f.read()
