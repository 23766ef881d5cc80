"""Executes launch/colab_distillation.ipynb headless, with small parameters, on CPU.

The notebook runs in a fresh ``python3`` kernel (ipykernel) driven by nbclient; parameters
are injected papermill-style by rewriting the cell tagged ``parameters``. Any failing cell
fails the test. Everything the kernel writes (data, IPython and matplotlib state, kernel
connection files) goes under pytest's temporary directory, never the home directory.
"""

import ast
import importlib.metadata
import importlib.util
import os
import pathlib
import subprocess
import sys
import types

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("jupyter_client.kernelspec")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "launch" / "colab_distillation.ipynb"
KERNEL_NAME = "python3"
# CI parameters: the bundled digits, short runs (well under 2 minutes on 2 CPU cores).
CI_PARAMETERS = {"dataset": "digits", "teacher_steps": 150, "student_steps": 150,
                 "batch_size": 64, "seed": 0, "num_seeds": 2, "install": False}


def read_notebook():
  return nbformat.read(NOTEBOOK, as_version=4)


def parameters_cell_index(nb) -> int:
  """Index of the one code cell tagged ``parameters`` (papermill's convention)."""
  found = [i for i, cell in enumerate(nb.cells)
           if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])]
  if len(found) != 1:
    raise ValueError(f"expected one code cell tagged 'parameters'; found cells {found}.")
  return found[0]


def parameter_defaults(source: str) -> dict[str, object]:
  """The ``name = literal`` assignments of a parameters cell, in order."""
  defaults = {}
  for node in ast.parse(source).body:
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)):
      raise ValueError(f"parameters cell: only `name = literal` lines are supported; got "
                       f"{ast.unparse(node)!r}.")
    defaults[node.targets[0].id] = ast.literal_eval(node.value)
  return defaults


def inject_parameters(nb, **overrides):
  """Replaces the parameters cell's source by its defaults updated with ``overrides``.

  Like papermill, the cell keeps its place and is retagged ``injected-parameters``; unlike
  a plain append, a misspelt or removed parameter name fails here, loudly.

  Raises:
    KeyError: naming the parameters the notebook does not declare.
  """
  index = parameters_cell_index(nb)
  values = parameter_defaults(nb.cells[index].source)
  unknown = sorted(set(overrides) - set(values))
  if unknown:
    raise KeyError(f"the notebook has no parameter(s) {unknown}; it declares {sorted(values)}.")
  values.update(overrides)
  cell = nb.cells[index]
  cell.source = "# Parameters injected by tests/notebook_test.py\n" + "".join(
      f"{name} = {value!r}\n" for name, value in values.items())
  cell.metadata["tags"] = ["injected-parameters"]
  return nb


def execute(nb, workdir: pathlib.Path, timeout: int = 300):
  """Runs every cell in a fresh kernel with ``workdir`` as its working directory."""
  client = nbclient.NotebookClient(
      nb, kernel_name=KERNEL_NAME, timeout=timeout, allow_errors=False,
      resources={"metadata": {"path": str(workdir)}})
  client.execute()
  return nb


def outputs_text(nb) -> str:
  """Everything the code cells printed, as one string."""
  return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def count_images(nb) -> int:
  return sum("image/png" in out.get("data", {}) for cell in nb.cells
             if cell.cell_type == "code" for out in cell.get("outputs", []))


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  """Environment of the kernel subprocess: CPU only, all state under tmp_path."""
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("KDJAX_DATA_DIR", str(tmp_path / "tensorflow_datasets"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
  monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter_data"))
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  # The kernel imports the kdjax of this checkout, not whichever one is installed.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(NOTEBOOK.parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]))
  cache = os.environ.get("KDJAX_TEST_COMPILATION_CACHE")
  if cache:  # the suite's persistent compilation cache, read by jax from its env vars
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", cache)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return tmp_path


def test_python3_kernel_runs_this_interpreter(kernel_env):
  """nbclient starts the ``python3`` kernel spec with the interpreter running the tests."""
  del kernel_env
  spec = kernelspec.KernelSpecManager().get_kernel_spec(KERNEL_NAME)
  executable = spec.argv[0]
  # jupyter_client substitutes sys.executable for a bare "python" in the spec's argv.
  if executable not in ("python", f"python{sys.version_info[0]}",
                        "python{}.{}".format(*sys.version_info[:2])):
    assert os.path.realpath(executable) == os.path.realpath(sys.executable), (
        f"kernel {KERNEL_NAME!r} runs {executable}, not {sys.executable}; install ipykernel "
        f"into this environment.")


def test_inject_parameters_rewrites_the_parameters_cell():
  nb = inject_parameters(read_notebook(), dataset="digits", teacher_steps=3)
  cell = nb.cells[[i for i, c in enumerate(nb.cells)
                   if "injected-parameters" in c.metadata.get("tags", [])][0]]
  values = parameter_defaults(cell.source)
  assert values["dataset"] == "digits" and values["teacher_steps"] == 3
  assert {"data_dir", "student_steps", "batch_size", "seed", "install"} <= set(values)
  with pytest.raises(KeyError, match="no parameter"):
    inject_parameters(read_notebook(), datset="digits")


def test_notebook_runs_end_to_end(kernel_env, monkeypatch):
  # Two devices, as a TPU's cores: every step must split its batch over all of them.
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  data_dir = kernel_env / "tensorflow_datasets"
  nb = inject_parameters(read_notebook(), data_dir=str(data_dir), **CI_PARAMETERS)
  execute(nb, kernel_env)

  text = outputs_text(nb)
  assert "accelerator: CPU" in text
  assert "dataset 'digits'" in text
  assert "batches of 64 over 2 device(s)" in text
  for method in ("teacher", "scratch", "KD", "DKP", "Annealing-KD (stage I)",
                 "Annealing-KD (stage II)"):
    assert f"{method}: " in text, method
  assert "| Annealing-KD |" in text  # the closing results table
  assert count_images(nb) >= 3  # accuracy, schedules, agreement
  assert (data_dir / "kdjax_digits").is_dir()  # data went where the parameters said


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None,
    reason="with TensorFlow installed, dataset='auto' may download CIFAR-10")
def test_auto_dataset_falls_back_to_digits_without_cifar10(kernel_env):
  """Offline, with no prepared CIFAR-10, "auto" says so and uses the digits."""
  nb = read_notebook()
  data_cell = next(i for i, c in enumerate(nb.cells)
                   if c.cell_type == "code" and "load_cifar10" in c.source)
  nb.cells = nb.cells[:data_cell + 1]  # parameters, setup and data: no training
  inject_parameters(nb, dataset="auto", data_dir=str(kernel_env / "empty_data_dir"),
                    install=False)
  execute(nb, kernel_env, timeout=120)
  text = outputs_text(nb)
  assert "CIFAR-10 is unavailable" in text
  assert "Falling back to the bundled handwritten digits" in text
  assert "dataset 'digits'" in text


def test_colab_install_keeps_the_runtimes_jax(monkeypatch):
  """In Colab the setup cell installs kdjax with every jax distribution pinned as installed,
  so pip can never replace the runtime's TPU or GPU build of jax."""
  nb = read_notebook()
  (setup,) = [c.source for c in nb.cells
              if c.cell_type == "code" and '"pip", "install"' in c.source]
  commands = []
  monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "kdjax" else find_spec(name, *a))
  monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: commands.append(args))
  wheel = "/content/kdjax-0.1.0-py3-none-any.whl"
  exec(setup, {"install": True, "kdjax_source": wheel})
  (command,) = commands
  assert command[1:6] == ["-m", "pip", "install", "-q", wheel], command
  pins = command[6:]
  for name in ("jax", "jaxlib"):
    assert f"{name}=={importlib.metadata.version(name)}" in pins, pins
  with pytest.raises(FileNotFoundError, match="upload a kdjax wheel"):
    exec(setup, {"install": True, "kdjax_source": ""})  # no wheel in /content here
