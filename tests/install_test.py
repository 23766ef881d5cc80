"""What an installed kdjax holds: the library, the training binary, and the config schema.

``setup.cfg`` is read with setuptools; an installation is simulated by copying each
package where ``package_dir`` says, and the binary then runs from another directory, on a
config written outside the repository, with nothing of the checkout on the path.
"""

import os
import pathlib
import shutil
import subprocess
import sys

from setuptools.config.setupcfg import read_configuration

REPO = pathlib.Path(__file__).resolve().parents[1]
USER_CONFIG = '''
from kdjax import config as base


def get_config():
  config = base.get_config()
  config.stages = base.stages()
  config.stages.mine = base.stage("mlp_tiny", "scratch", num_steps=10)
  return config
'''


def _options():
  return read_configuration(str(REPO / "setup.cfg"))


def _install(site: pathlib.Path) -> None:
  """Copies every package of setup.cfg to ``site`` as pip would lay it out."""
  options = _options()["options"]
  package_dir = options.get("package_dir", {})
  for package in options["packages"]:
    source = REPO / package_dir.get(package, package.replace(".", "/"))
    target = site / package.replace(".", "/")
    target.mkdir(parents=True, exist_ok=True)
    for module in source.glob("*.py"):
      shutil.copy(module, target / module.name)


def test_every_library_package_and_the_binary_are_installed():
  options = _options()["options"]
  packages = set(options["packages"])
  library = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "kdjax").rglob("__init__.py")}
  assert library <= packages, sorted(library - packages)
  assert options["package_dir"] == {"kdjax.launch": "launch"}
  scripts = options["entry_points"]["console_scripts"]
  assert scripts == ["kdjax-train = kdjax.launch.train:run"]
  assert "configs" not in packages  # the repository's configs need its root on the path


def test_the_installed_binary_runs_a_config_written_outside_the_repository(tmp_path):
  site, elsewhere = tmp_path / "site-packages", tmp_path / "elsewhere"
  _install(site)
  elsewhere.mkdir()
  (elsewhere / "my_config.py").write_text(USER_CONFIG)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(PYTHONPATH=str(site), JAX_PLATFORMS="cpu")
  process = subprocess.run(
      [sys.executable, "-m", "kdjax.launch.train", "--config=my_config.py",
       f"--workdir={tmp_path / 'run'}", "--config.stages.mine.num_steps=-1",
       "--config.compilation_cache_dir="],
      cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
  # The user's stage was read, validated and refused: the binary and schema came from site.
  assert process.returncode == 1, process.stderr
  assert process.stderr.strip().splitlines()[-1] == (
      "error: stages.mine.num_steps=-1 must be an integer >= 0 (0: the stage's length is "
      "given in num_epochs)."), process.stderr
