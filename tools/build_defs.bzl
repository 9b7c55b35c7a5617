"""The project's Python rules, so each BUILD file lists only what differs per target.

Every target runs with the venv toolchain (tools/python) and finds `tfjest` from the workspace
root (`imports = [".."]` on the libraries). tests/meta/build_files_test.py reads these macros as
the native rules they wrap: `tfjest_py_test` is a `py_test` whose srcs default to
`[name + ".py"]`; `tfjest_py_test_group` is one `py_test` of all its srcs.
"""

def tfjest_py_library(name, srcs, deps = [], **kwargs):
    """A py_library importable from the workspace root."""
    native.py_library(
        name = name,
        srcs = srcs,
        deps = deps,
        imports = kwargs.pop("imports", [".."]),
        srcs_version = "PY3",
        **kwargs
    )

def tfjest_py_binary(name, deps = [], srcs = None, **kwargs):
    """A program `name.py`, run as `python -m <package>.<name>` by the tests."""
    native.py_binary(
        name = name,
        srcs = srcs or [name + ".py"],
        deps = deps,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )

def tfjest_py_test(name, size, deps = ["//tfjest"], srcs = None, **kwargs):
    """A test file `name.py`; `size` is required: at least 3x its time under load."""
    native.py_test(
        name = name,
        size = size,
        srcs = srcs or [name + ".py"],
        deps = deps,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )

def tfjest_py_tests(srcs, size, deps = ["//tfjest"], shards = {}, **kwargs):
    """One `tfjest_py_test` per file of `srcs`, named after its path without `.py`.

    Tests in sub-directories keep them in their names (`//tests:programs/harness_test`). All
    the tests of one call share `size`, `deps`, `data` and `tags`: a group is sized by its
    slowest member (at least 3x its time under load). `shards` maps a file of `srcs` to its
    `shard_count` (absltest splits its test methods over that many processes).
    """
    for src in srcs:
        extra = {"shard_count": shards[src]} if src in shards else {}
        tfjest_py_test(
            name = src[:-len(".py")],
            size = size,
            deps = deps,
            srcs = [src],
            **dict(kwargs, **extra)
        )

def tfjest_py_test_group(name, srcs, size, deps = ["//tfjest"], data = [], **kwargs):
    """One `py_test` that runs the test files `srcs` in one process, under pytest.

    Its main is the package's `run_group.py` (tests/run_group.py), which gets the files as
    arguments: TensorFlow is imported once per group, not once per file. `shard_count` splits
    the files over that many processes (every n-th file from the i-th, in the order of `srcs`).
    The package's `conftest.py` and the root's `pytest.ini` come along, as under `make pytest`.
    """
    native.py_test(
        name = name,
        size = size,
        srcs = ["run_group.py"] + srcs,
        main = "run_group.py",
        args = ["%s/%s" % (native.package_name(), src) for src in srcs],
        deps = deps,
        data = data + ["conftest.py", "//:pytest.ini"],
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
