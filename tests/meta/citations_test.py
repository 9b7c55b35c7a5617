"""Nothing in the project cites a file it does not ship.

Scans every tracked source and document (code, BUILD files, README, docs, BENCHMARKS) for
repository paths (`tfjest/...py`, `tests/...py`, `docs/...md`, ...) and fails naming each path
that does not exist and where it is cited; and for the name of the outside spec the project
once cited instead of its own `docs/SPEC.md`.
"""

import os
import re
import subprocess

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PATH = re.compile(r"(?<![\w/.<>-])((?:tfjest|tests|examples|benchmarks|docs|tools|third_party)"
                   r"/[A-Za-z0-9_/.\-]*[A-Za-z0-9_]\.(?:py|md|bzl|json|png))\b")
_SUFFIXES = (".py", ".md", ".bzl", "BUILD", "Makefile", ".ini")
# Paths that stand for no file on purpose: a synthetic workspace in build_files_test, and a
# per-seed file name pattern in the benchmark history.
_NOT_FILES = ("tests/build_files_test.py", "tests/foo_test.py",
              "benchmarks/results/dnc/results_seedS.json")
_OUTSIDE_SPEC = "JEST" + "_SPEC"  # written in two parts so that this file does not cite it


def _tracked_files():
  try:
    out = subprocess.run(["git", "ls-files"], cwd=_ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
  except (OSError, subprocess.CalledProcessError):  # no git (Bazel's sandbox): walk the tree
    out = [os.path.relpath(os.path.join(d, n), _ROOT) for d, _, names in os.walk(_ROOT)
           for n in names]
  return [f for f in out if f.endswith(_SUFFIXES) and not f.startswith(("benchmarks/results/",
                                                                        ".venv", "bazel-"))]


class CitationsTest(absltest.TestCase):

  def test_every_cited_path_exists(self):
    missing = {}
    for name in _tracked_files():
      with open(os.path.join(_ROOT, name), encoding="utf-8") as f:
        text = f.read()
      for match in _PATH.finditer(text):
        path = match.group(1)
        if path not in _NOT_FILES and not os.path.exists(os.path.join(_ROOT, path)):
          missing.setdefault(path, set()).add(name)
    self.assertEqual({k: sorted(v) for k, v in missing.items()}, {})

  def test_the_outside_spec_is_not_cited(self):
    citing = []
    for name in _tracked_files():
      with open(os.path.join(_ROOT, name), encoding="utf-8") as f:
        if _OUTSIDE_SPEC in f.read():
          citing.append(name)
    self.assertEqual(citing, [], "cite docs/SPEC.md by section instead")

  def test_the_check_can_fail(self):
    cited = _PATH.search("see tfjest/" + "no_such_module.py for details").group(1)
    self.assertFalse(os.path.exists(os.path.join(_ROOT, cited)))


if __name__ == "__main__":
  absltest.main()
