"""Every program of examples/ and benchmarks/ runs as its docstring says: `python -m <module>`
from the repository root, and its flags are documented (nothing edits sys.path to get there).

Each program is run as `python -m <module>` by one program test (`RUN_BY` says which, and a
test checks that file does run it); `--help` is run here for the programs no other test runs
and for the demo (running all of them took most of this file's time and checked nothing the
smoke runs do not).
"""

import ast
import os

from absl.testing import parameterized
import tensorflow as tf

from tests.programs import launch

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# program -> the test file (under tests/programs) that runs it with `python -m`
RUN_BY = {
    "examples.demo": "examples_smoke_test.py",
    "examples.dnc": "dnc_programs_test.py",
    "examples.quickstart": "quickstart_test.py",
    "examples.rela": None,  # run here with --help only (its recipe is benchmarks.rela's)
    "examples.train_reference": "examples_smoke_test.py",
    "examples.train_learner": "train_learner_test.py",
    "benchmarks.accelerator_check": "benchmarks_test.py",
    "benchmarks.cheap_scoring": "benchmarks_test.py",
    "benchmarks.data_efficiency": "examples_smoke_test.py",
    "benchmarks.dnc": "dnc_programs_test.py",
    "benchmarks.plateau_table": "plateau_table_test.py",
    "benchmarks.rela": "rela_benchmark_test.py",
    "benchmarks.scoring_view": "benchmarks_test.py",
    "benchmarks.selection_overhead": "benchmarks_test.py",
    "benchmarks.selection_scale": "benchmarks_test.py",
    "benchmarks.step_overhead": "benchmarks_test.py",
    "benchmarks.store_end_to_end": "benchmarks_test.py",
    "benchmarks.store_scale": "store_scale_test.py",
    "benchmarks.store_service_shards": "benchmarks_test.py",
    "benchmarks.summaries_overhead": "benchmarks_test.py",
}
PROGRAMS = tuple(RUN_BY)
HELP_RUN = ("examples.demo",) + tuple(m for m, by in RUN_BY.items() if by is None)


def _source(path):
  with open(os.path.join(_ROOT, path)) as f:
    return f.read()


def _module_source(module):
  return _source(os.path.join(*module.split(".")) + ".py")


def _help_outputs():
  """`python -m <program> --help` for `HELP_RUN` (tests/programs/launch.py)."""
  outputs = {}
  for module in HELP_RUN:
    result = launch.run(module, "--help")
    outputs[module] = (result.returncode, result.stdout, result.stderr)
  return outputs


def _flag_calls(source):
  return [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call) and
          getattr(node.func, "attr", "").startswith("DEFINE_")]


class ProgramsTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.help = _help_outputs()

  def test_every_program_is_listed(self):
    found = set()
    for package in ("examples", "benchmarks"):
      for name in os.listdir(os.path.join(_ROOT, package)):
        if name.endswith(".py") and "app.run(main)" in _module_source(f"{package}.{name[:-3]}"):
          found.add(f"{package}.{name[:-3]}")
    self.assertEqual(found, set(PROGRAMS))

  @parameterized.parameters(*PROGRAMS)
  def test_docstring_gives_the_command_and_a_test_runs_it(self, module):
    source = _module_source(module)
    self.assertIn(f"python -m {module}", ast.get_docstring(ast.parse(source)))
    self.assertNotIn("sys.path", source)
    if RUN_BY[module] is not None:
      test = _source(os.path.join("tests", "programs", RUN_BY[module]))
      package, name = module.split(".")
      # `launch.run("<module>")` (tests/programs/launch.py: as `python -m` does), or a
      # `_run("<name>")` helper that calls it with the prefix
      self.assertRegex(test, rf"[\"']({module}|{name})[\"']", f"{RUN_BY[module]} runs {module}")
      self.assertIn("launch.run(", test)
    else:
      self.assertIn(module, HELP_RUN)

  @parameterized.parameters(*PROGRAMS)
  def test_every_flag_has_a_help_text(self, module):
    calls = _flag_calls(_module_source(module))
    self.assertNotEmpty(calls)
    for call in calls:
      name = call.args[0].value
      help_text = call.args[2] if len(call.args) > 2 else next(
          (k.value for k in call.keywords if k.arg == "help"), None)
      self.assertIsNotNone(help_text, f"{module} --{name}")
      if isinstance(help_text, ast.Constant):  # an f-string or a joined one is not empty
        self.assertTrue(help_text.value.strip(), f"{module} --{name}")

  @parameterized.parameters(*HELP_RUN)
  def test_help_lists_the_flags(self, module):
    returncode, stdout, stderr = self.help[module]
    # absl prints the help on stdout and exits with 1.
    self.assertEqual(returncode, 1, stderr[-2000:])
    for call in _flag_calls(_module_source(module)):
      name = call.args[0].value
      self.assertRegex(stdout, rf"--\[?(no)?\]?{name}\b", f"{module} --{name}")

  def test_data_dir_help_says_where_the_default_is(self):
    # A newcomer read "(default: TFDS')." in every program's --data_dir help.
    for module in PROGRAMS:
      self.assertNotIn("(default: TFDS').", _module_source(module), module)
    self.assertIn("~/tensorflow_datasets", self.help["examples.demo"][1])


if __name__ == "__main__":
  tf.test.main()
