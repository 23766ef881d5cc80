"""The README's promises: its Python examples run, its Quickstart holds two commands, and its
Results section links the report and the command that regenerates it."""

import os
import re

import pytest

from kdjax import report

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


def test_results_section_links_the_report_and_a_command_that_loads_its_tables():
  with open(README) as f:
    text = f.read()
  section = text.split("## Results", 1)[1].split("\n## ", 1)[0]
  assert "[`docs/results.md`](docs/results.md)" in section
  (command,) = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
  assert command.startswith("python -m launch.report")
  tables = re.findall(r"--table=(\S+)=(\S+)", command)
  assert tables
  root = os.path.dirname(README)
  for config_file, workdirs in tables:
    path, _, arg = config_file.partition(":")
    table = report.load_table(os.path.join(root, path) + (f":{arg}" if arg else ""),
                              workdirs.split(","))
    assert table.spec["rows"]
