"""Every program of examples/ and benchmarks/ runs as its docstring says: `python -m <module>`
from the repository root, and `--help` lists its flags (nothing edits sys.path to get there)."""

import ast
import os
import subprocess
import sys

from absl.testing import parameterized
import tensorflow as tf

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROGRAMS = ("examples.demo", "examples.dnc", "examples.quickstart", "examples.rela",
            "examples.train_reference", "examples.train_learner",
            "benchmarks.accelerator_check", "benchmarks.cheap_scoring",
            "benchmarks.data_efficiency", "benchmarks.dnc", "benchmarks.plateau_table",
            "benchmarks.rela", "benchmarks.scoring_view",
            "benchmarks.selection_overhead", "benchmarks.selection_scale",
            "benchmarks.step_overhead", "benchmarks.summaries_overhead")


def _source(module):
  with open(os.path.join(_ROOT, *module.split(".")) + ".py") as f:
    return f.read()


def _help_outputs():
  """`python -m <program> --help` for every program, run side by side (each one imports
  TensorFlow; one after the other they took most of this file's time)."""
  running = {module: subprocess.Popen([sys.executable, "-m", module, "--help"], cwd=_ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
             for module in PROGRAMS}
  outputs = {}
  for module, process in running.items():
    try:
      stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      process.kill()
      stdout, stderr = process.communicate()
    outputs[module] = (process.returncode, stdout, stderr)
  return outputs


class ProgramsTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.help = _help_outputs()

  def test_every_program_is_listed(self):
    found = set()
    for package in ("examples", "benchmarks"):
      for name in os.listdir(os.path.join(_ROOT, package)):
        if name.endswith(".py") and "app.run(main)" in _source(f"{package}.{name[:-3]}"):
          found.add(f"{package}.{name[:-3]}")
    self.assertEqual(found, set(PROGRAMS))

  @parameterized.parameters(*PROGRAMS)
  def test_docstring_gives_the_command_and_help_lists_the_flags(self, module):
    source = _source(module)
    self.assertIn(f"python -m {module}", ast.get_docstring(ast.parse(source)))
    self.assertNotIn("sys.path", source)
    returncode, stdout, stderr = self.help[module]
    # absl prints the help on stdout and exits with 1.
    self.assertEqual(returncode, 1, stderr[-2000:])
    flags = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call) and
             getattr(node.func, "attr", "").startswith("DEFINE_")]
    self.assertNotEmpty(flags)
    for call in flags:
      name = call.args[0].value
      self.assertRegex(stdout, rf"--\[?(no)?\]?{name}\b", f"{module} --{name}")

  def test_data_dir_help_says_where_the_default_is(self):
    # A newcomer read "(default: TFDS')." in every program's --data_dir help.
    for module, (_, stdout, _) in self.help.items():
      self.assertNotIn("(default: TFDS').", stdout, module)
    self.assertIn("~/tensorflow_datasets", self.help["examples.demo"][1])


if __name__ == "__main__":
  tf.test.main()
