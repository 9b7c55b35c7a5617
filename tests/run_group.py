"""Runs a group of test files in one process under pytest: the main of a grouped Bazel test.

`tfjest_py_test_group` (tools/build_defs.bzl) gives it the group's files as arguments. One
process imports TensorFlow once for the whole group (seconds of CPU per file saved) and shares
the traced functions' conversions, as `make pytest` does for the whole suite. With Bazel's
`shard_count`, shard `i` of `n` runs every `n`-th file from the `i`-th, in the order given (the
BUILD file lists the slowest first, so the shards come out about even).

Exit status: pytest's, so a group that collects nothing (pytest's 5) fails too.
"""

import os
import sys

import pytest


def shard(files, index: int, count: int):
  """The files of shard `index` of `count`: every `count`-th from `index`."""
  if not 0 <= index < count:
    raise ValueError(f"The shard index must be in [0, {count}). Received: index={index}")
  return list(files)[index::count]


def main(argv) -> int:
  files = argv[1:]
  if not files:
    print("run_group: no test files given", file=sys.stderr)
    return 2
  count = int(os.environ.get("TEST_TOTAL_SHARDS", "1"))
  if count > 1:
    files = shard(files, int(os.environ["TEST_SHARD_INDEX"]), count)
    status = os.environ.get("TEST_SHARD_STATUS_FILE")
    if status:  # tells Bazel this test shards itself
      with open(status, "w"):
        pass
  args = ["-q", "-p", "no:cacheprovider", *files]
  xml = os.environ.get("XML_OUTPUT_FILE")
  if xml:
    args.append(f"--junitxml={xml}")
  return int(pytest.main(args))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
