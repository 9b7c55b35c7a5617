"""The `>>>` examples in the public docstrings run and print what they show.

As tf.data's own transformations do, the docstrings of the main entry points hold short examples
with tiny models; this test replays each with the standard library's `doctest`, in fresh
globals (an example imports what it uses), so that the examples cannot rot. Each object must
have at least one example: replacing them by prose or a code fence fails here.
"""

import doctest
import inspect

from absl.testing import parameterized
import tensorflow as tf

import tfjest

# The documented entry points whose docstrings must show a runnable example.
_OBJECTS = {
    "select": tfjest.select,
    "attach": tfjest.attach,
    "cache_reference": tfjest.cache_reference,
    "InputShards": tfjest.InputShards,
    "OnlineProxy": tfjest.OnlineProxy,
    "selection_checkpoint": tfjest.selection_checkpoint,
    "deterministic_options": tfjest.deterministic_options,
    "backup_and_restore": tfjest.backup_and_restore,
    "prior_targets": tfjest.prior_targets,
    "ReLAAid": tfjest.ReLAAid,
    "rela_switch_update": tfjest.rela_switch_update,
    "epoch_subsets": tfjest.epoch_subsets,
    "kmeans": tfjest.kmeans,
    "cluster_reference": tfjest.cluster_reference,
    "by_cluster": tfjest.by_cluster,
}
_OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _doctests(name):
  """The doctests of `tfjest.<name>` (the object's own first), each with fresh globals."""
  obj = _OBJECTS[name]
  qualified = f"tfjest.{name}"
  tests = doctest.DocTestFinder().find(obj, qualified, module=inspect.getmodule(obj),
                                       globs={"__name__": "__main__"})
  return sorted(tests, key=lambda test: test.name != qualified)


class DocstringExamplesTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters((name, name) for name in _OBJECTS)
  def test_examples_run(self, name):
    tests = _doctests(name)
    if not tests or tests[0].name != f"tfjest.{name}" or not tests[0].examples:
      self.fail(f"tfjest.{name} must show a `>>>` example in its docstring that this test can "
                "run. Received: a docstring without one")
    runner = doctest.DocTestRunner(optionflags=_OPTIONS)
    report = []
    failed = attempted = 0
    for test in tests:
      result = runner.run(test, out=report.append, clear_globs=True)
      failed, attempted = failed + result.failed, attempted + result.attempted
    self.assertGreater(attempted, 0)
    self.assertEqual(failed, 0, f"{failed} of {attempted} examples in the docstring of "
                     f"tfjest.{name} failed:\n" + "".join(report))


if __name__ == "__main__":
  tf.test.main()
