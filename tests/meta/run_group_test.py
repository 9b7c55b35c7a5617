"""tests/run_group.py, the main of the grouped Bazel test targets: its shards and exit status."""

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tests import run_group

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(directory, *files, env=None):
  return subprocess.run([sys.executable, os.path.join(_TESTS, "run_group.py"), *files],
                        cwd=directory, capture_output=True, text=True, timeout=300,
                        check=False, env=env)


class RunGroupTest(absltest.TestCase):

  def test_shards_cover_every_file_once(self):
    files = [f"{c}_test.py" for c in "abcdefg"]
    shards = [run_group.shard(files, i, 3) for i in range(3)]
    self.assertEqual(shards, [["a_test.py", "d_test.py", "g_test.py"],
                              ["b_test.py", "e_test.py"], ["c_test.py", "f_test.py"]])
    with self.assertRaisesRegex(ValueError, r"Received: index=3"):
      run_group.shard(files, 3, 3)

  def test_status_is_pytests_and_nothing_collected_fails(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    with open(os.path.join(directory, "empty_test.py"), "w") as f:
      f.write("X = 1\n")
    with open(os.path.join(directory, "one_test.py"), "w") as f:
      f.write("def test_fails():\n  assert False\n")
    self.assertEqual(_run(directory, "empty_test.py").returncode, 5)  # pytest: none collected
    self.assertEqual(_run(directory).returncode, 2)  # no files given
    # As Bazel's shard 1 of 2: only the second file runs (the failing first one does not), and
    # the shard status file is written.
    status = os.path.join(directory, "shard_status")
    env = dict(os.environ, TEST_TOTAL_SHARDS="2", TEST_SHARD_INDEX="1",
               TEST_SHARD_STATUS_FILE=status)
    self.assertEqual(_run(directory, "one_test.py", "empty_test.py", env=env).returncode, 5)
    self.assertTrue(os.path.exists(status))


if __name__ == "__main__":
  absltest.main()
