"""Keeps the Bazel BUILD files honest: every test and module has a target, every import a dep.

`bazel test //...` only runs what BUILD files declare, so a new `tests/*_test.py` without a
`py_test` would silently never run under Bazel, and a module missing from `deps` would import
under pytest (the whole tree is on sys.path) but not in Bazel's runfiles. This test reads the
BUILD files as text (Starlark's BUILD subset parses as Python) and fails naming the missing
target or dep. It runs the same under pytest and under Bazel, where the files it reads are the
`build_inputs` filegroups (globs, so new files show up without anyone listing them).
"""

import ast
import importlib.util
import os
import pathlib
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Set

from absl.testing import absltest

# Directories (with their subdirectories) whose BUILD files are checked. Every `.py` under a
# library root must be in the `srcs` of a py_library or py_binary; every `*_test.py` under a
# test root in the `srcs` of a py_test.
LIBRARY_ROOTS = ("tfjest", "examples", "benchmarks")
TEST_ROOTS = ("tests",)
# The target that reads the files: its `data` must hold every checked package's build_inputs.
CHECKER_TARGET = "//tests:meta_tests"  # the meta group, whose build_files_test.py this is
_RULE_KINDS = ("py_library", "py_binary", "py_test")
# tools/build_defs.bzl's macros, read as the rules they wrap; srcs default to [name + ".py"]
# for the binary and the test (the library names its srcs).
_MACROS = {"tfjest_py_library": "py_library", "tfjest_py_binary": "py_binary",
           "tfjest_py_test": "py_test", "tfjest_py_test_group": "py_test"}
_NOT_CHECKED = ("conftest.py",)  # pytest's, never imported by a test


class Rule(NamedTuple):
  kind: str
  label: str  # "//package:name"
  srcs: List[str]  # workspace-relative paths
  deps: List[str]  # labels, normalized to "//package:name"
  data: List[str]  # labels, normalized; file names in data are kept as labels too


def _normalize_label(label: str, package: str) -> Optional[str]:
  """`:x` -> `//package:x`; `//a/b` -> `//a/b:b`; external repositories -> None."""
  if label.startswith("@//"):
    label = label[1:]
  if label.startswith("@"):
    return None
  if label.startswith(":"):
    return "//{}:{}".format(package, label[1:])
  if label.startswith("//"):
    if ":" not in label:
      return "{}:{}".format(label, label.rsplit("/", 1)[-1])
    return label
  return "//{}:{}".format(package, label)


def _evaluate(node: ast.AST, glob: Callable[[Sequence[str]], List[str]], names=None):
  """Evaluates the literal subset of Starlark that BUILD attributes use here.

  Handles constants, lists, tuples, dicts, `+`, `glob([...])` and the names of `names` (the
  file's top-level `NAME = ...` assignments); returns None for anything else, which the
  caller treats as "not a list of files".
  """
  names = names or {}
  if isinstance(node, ast.Name):
    return names.get(node.id)
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
    left, right = _evaluate(node.left, glob, names), _evaluate(node.right, glob, names)
    if left is None or right is None:
      return None
    return left + right
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and
      node.func.id == "glob" and node.args):
    patterns = _evaluate(node.args[0], glob, names)
    exclude = next((_evaluate(kw.value, glob, names) for kw in node.keywords
                    if kw.arg == "exclude"), None) or []
    if patterns is None:
      return None
    return [f for f in glob(patterns) if not any(glob_match(p, f) for p in exclude)]
  try:
    return ast.literal_eval(node)
  except ValueError:
    return None


def glob_match(pattern: str, path: str) -> bool:
  """Bazel's glob semantics: `*` and `?` stay within a directory, `**` spans directories."""
  regex = ""
  segments = pattern.split("/")
  for i, segment in enumerate(segments):
    last = i == len(segments) - 1
    if segment == "**":
      regex += ".*" if last else "(?:[^/]+/)*"
      continue
    regex += re.escape(segment).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    regex += "" if last else "/"
  return re.fullmatch(regex, path) is not None


def parse_build(text: str, package: str,
                glob: Callable[[Sequence[str]], List[str]] = lambda patterns: []
               ) -> List[Rule]:
  """Returns the py_library/py_binary/py_test rules of one BUILD file.

  Args:
    text: the BUILD file's contents.
    package: its package, e.g. "tests" or "tfjest/datasets".
    glob: the package's files (paths relative to the package) matching any of the patterns.

  Raises:
    SyntaxError: when `text` is not in the Python-compatible subset of Starlark.
  """
  rules, names = [], {}
  for statement in ast.parse(text, filename="//{}:BUILD".format(package)).body:
    if (isinstance(statement, ast.Assign) and len(statement.targets) == 1 and
        isinstance(statement.targets[0], ast.Name)):
      names[statement.targets[0].id] = _evaluate(statement.value, glob, names)
      continue
    call = statement.value if isinstance(statement, ast.Expr) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and
            call.func.id in _RULE_KINDS + tuple(_MACROS) + ("tfjest_py_tests",)):
      continue
    attrs = {kw.arg: _evaluate(kw.value, glob, names) for kw in call.keywords if kw.arg}
    if call.func.id == "tfjest_py_tests":  # one py_test per file of srcs, named after it
      srcs = attrs.pop("srcs", None) or []
      if call.args:
        srcs = _evaluate(call.args[0], glob, names) or []
      for src in srcs:
        rules.append(Rule(
            kind="py_test", label="//{}:{}".format(package, src[:-len(".py")]),
            srcs=["{}/{}".format(package, src)],
            deps=[label for label in (_normalize_label(v, package) for v in
                                      attrs.get("deps", ["//tfjest"]) or []) if label],
            data=[label for label in (_normalize_label(v, package) for v in
                                      attrs.get("data") or []) if label]))
      continue
    kind = _MACROS.get(call.func.id, call.func.id)
    if call.func.id in _MACROS and kind != "py_library" and "srcs" not in attrs:
      attrs["srcs"] = ["{}.py".format(attrs.get("name"))]
    if call.func.id in ("tfjest_py_test", "tfjest_py_test_group") and "deps" not in attrs:
      attrs["deps"] = ["//tfjest"]

    def labels(attr, attrs=attrs):
      normalized = (_normalize_label(v, package) for v in attrs.get(attr) or []
                    if isinstance(v, str))
      return [label for label in normalized if label]

    rules.append(Rule(
        kind=kind,
        label="//{}:{}".format(package, attrs.get("name")),
        srcs=["{}/{}".format(package, s) for s in attrs.get("srcs") or []
              if isinstance(s, str)],
        deps=labels("deps"),
        data=labels("data"),
    ))
  return rules


def first_party_imports(source: str, path: str, exists: Callable[[str], bool]) -> Set[str]:
  """Workspace files a Python file needs at import time, for packages of this workspace.

  `import a.b` needs `a/b.py` (or `a/b/__init__.py`); `from a import b` needs `a/b.py` when that
  is a module, else `a/__init__.py`. Imports of anything not in the workspace are ignored.
  Imports inside functions count too: they fail just as surely, only later.
  """
  package_parts = path.split("/")[:-1]

  def module_file(dotted: str) -> Optional[str]:
    base = dotted.replace(".", "/")
    for candidate in (base + ".py", base + "/__init__.py"):
      if exists(candidate):
        return candidate
    return None

  needed = set()
  for node in ast.walk(ast.parse(source, filename=path)):
    if isinstance(node, ast.Import):
      modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = package_parts[:len(package_parts) - (node.level - 1)]
        base = ".".join(parent + ([base] if base else []))
      modules = []
      for alias in node.names:
        submodule = "{}.{}".format(base, alias.name) if base else alias.name
        modules.append(submodule if module_file(submodule) else base)
    else:
      continue
    for module in modules:
      found = module_file(module)
      if found and found != path:
        needed.add(found)
  return needed


def owning_package(path: str, packages: Set[str]) -> Optional[str]:
  """The Bazel package of a file: its nearest directory with a BUILD file, if any."""
  parts = path.split("/")[:-1]
  for end in range(len(parts), 0, -1):
    if "/".join(parts[:end]) in packages:
      return "/".join(parts[:end])
  return None


def find_problems(*, rules: Sequence[Rule], files: Sequence[str], packages: Set[str],
                  read: Callable[[str], str], checker_target: str = CHECKER_TARGET
                 ) -> List[str]:
  """Checks BUILD rules against the workspace's files; returns one message per problem.

  Args:
    rules: every py_* rule of `packages`.
    files: workspace-relative paths of the `.py` files under LIBRARY_ROOTS and TEST_ROOTS.
    packages: the directories under those roots that have a BUILD file.
    read: returns the contents of one of `files`.
    checker_target: the label of the test that runs this check under Bazel.

  Returns:
    Messages naming the missing target or dep; empty when the BUILD files are complete.
  """
  problems = []
  file_set = set(files)
  owners: Dict[str, List[Rule]] = {}
  for rule in rules:
    for src in rule.srcs:
      owners.setdefault(src, []).append(rule)

  for path in sorted(files):
    root = path.split("/", 1)[0]
    directory, filename = path.rsplit("/", 1)
    package = owning_package(path, packages)
    relative = path[len(package) + 1:] if package else filename
    if root in TEST_ROOTS and filename.endswith("_test.py"):
      kinds, wanted = ("py_test",), "py_test"
    elif root in LIBRARY_ROOTS:
      kinds, wanted = ("py_library", "py_binary"), "py_library or py_binary"
    else:
      continue
    if any(rule.kind in kinds for rule in owners.get(path, [])):
      continue
    # A package's __init__.py is its umbrella target, named like the package's directory.
    name = (directory.rsplit("/", 1)[-1] if filename == "__init__.py" else
            filename[:-len(".py")])
    if package != directory:
      problems.append(
          "{path} is in the srcs of no {wanted}, and {directory}/ has no BUILD file. Expected "
          "{directory}/BUILD with a target //{directory}:{name} (srcs = [\"{filename}\"]) "
          "and a build_inputs filegroup like tfjest/BUILD's.".format(
              path=path, wanted=wanted, directory=directory, name=name, filename=filename))
    elif wanted == "py_test":
      problems.append(
          "{path} has no py_test, so `bazel test //...` never runs it. Expected a target "
          "//{package}:{name} in {package}/BUILD, e.g. py_test(name = \"{name}\", "
          "srcs = [\"{relative}\"], size = ..., deps = [...]).".format(
              path=path, package=package, name=name, relative=relative))
    else:
      problems.append(
          "{path} is in the srcs of no {wanted}. Expected a target //{package}:{name} in "
          "{package}/BUILD with srcs = [\"{relative}\"].".format(
              path=path, wanted=wanted, package=package, name=name, relative=relative))

  by_label = {rule.label: rule for rule in rules}
  checker = by_label.get(checker_target)
  if checker is None:
    problems.append("{} is missing: nothing would run this check under Bazel.".format(
        checker_target))
  else:
    for package in sorted(packages):
      if "//{}:build_inputs".format(package) not in checker.data:
        problems.append(
            "//{package}:build_inputs is not in the data of {checker}, so under Bazel the "
            "check cannot see {package}/. Add a filegroup(name = \"build_inputs\", srcs = "
            "glob([\"*.py\"]) + [\"BUILD\"]) there and list it.".format(
                package=package, checker=checker_target))

  def provided(rule: Rule) -> Set[str]:
    seen, stack, out = set(), [rule.label], set()
    while stack:
      label = stack.pop()
      if label in seen or label not in by_label:
        continue
      seen.add(label)
      out.update(by_label[label].srcs)
      stack.extend(by_label[label].deps)
    return out

  for rule in rules:
    for dep in rule.deps:
      if dep not in by_label and dep[2:].split(":")[0] in packages:
        problems.append("{} depends on {}, which no BUILD file defines.".format(
            rule.label, dep))
    available = provided(rule)
    for src in rule.srcs:
      if src not in file_set:
        continue  # Bazel itself reports srcs that do not exist.
      for needed in sorted(first_party_imports(read(src), src, file_set.__contains__)):
        if needed not in available:
          suggestion = " or ".join(sorted(
              r.label for r in owners.get(needed, []) if r.kind == "py_library")) or (
                  "a py_library with srcs = [\"{}\"]".format(needed))
          problems.append(
              "{label}: {src} imports {needed}, which is not in the runfiles of {label}: "
              "add {suggestion} to its deps.".format(
                  label=rule.label, src=src, needed=needed, suggestion=suggestion))
  return problems


def workspace_root() -> pathlib.Path:
  """The tree this file sits in: the checkout under pytest, the runfiles tree under Bazel.

  Deliberately not resolved through symlinks: under Bazel the runfiles tree is a forest of
  symlinks, and only the unresolved paths show what the test targets can see.
  """
  return pathlib.Path(os.path.abspath(__file__)).parent.parent.parent


def check_workspace(root: pathlib.Path) -> List[str]:
  """Reads the BUILD files and `.py` files under `root`; returns find_problems' messages."""
  files, packages = [], set()
  for top in LIBRARY_ROOTS + TEST_ROOTS:
    for directory, subdirectories, names in os.walk(root / top):
      subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
      relative = pathlib.Path(directory).relative_to(root).as_posix()
      if "BUILD" in names:
        packages.add(relative)
      files.extend("{}/{}".format(relative, n) for n in sorted(names)
                   if n.endswith(".py") and n not in _NOT_CHECKED)
  rules = []
  for package in sorted(packages):
    # A package's files stop where a subdirectory has its own BUILD file.
    own = [f[len(package) + 1:] for f in files if owning_package(f, packages) == package]

    def glob(patterns, own=own):
      return [f for f in own if any(glob_match(p, f) for p in patterns)]

    rules.extend(parse_build((root / package / "BUILD").read_text(), package, glob))
  return find_problems(rules=rules, files=files, packages=packages,
                       read=lambda path: (root / path).read_text())


class BuildFilesTest(absltest.TestCase):

  def test_every_test_and_module_has_a_target_and_its_deps(self):
    problems = check_workspace(workspace_root())
    self.assertEmpty(problems, "BUILD files are out of date:\n  " + "\n  ".join(problems))

  def test_tests_import_tfjest_from_this_tree(self):
    # Under Bazel, runfiles must shadow any installed copy (`pip install -e .` included).
    spec = importlib.util.find_spec("tfjest")
    self.assertIsNotNone(spec, "tfjest is not importable")
    self.assertEqual(os.path.normpath(spec.origin),
                     os.path.normpath(workspace_root() / "tfjest" / "__init__.py"))


class CheckerTest(absltest.TestCase):
  """The checker itself must be able to fail: synthetic workspaces with one thing missing."""

  TFJEST_BUILD = """
py_library(name = "losses", srcs = ["losses.py"], imports = [".."])
py_library(name = "scores", srcs = ["scores.py"], deps = [":losses"])
py_library(name = "tfjest", srcs = ["__init__.py"], deps = [":scores", "//tfjest:losses"])
filegroup(name = "build_inputs", srcs = glob(["*.py"]) + ["BUILD"])
"""
  TESTS_BUILD = """
load("//some:defs.bzl", "something")
py_test(
    name = "build_files_test",
    srcs = ["build_files_test.py"],
    data = ["//tfjest:build_inputs", ":build_inputs"],
)
py_test(name = "losses_test", srcs = ["losses_test.py"], size = "small", deps = ["//tfjest"])
py_test(
    name = "scores_test",
    srcs = ["scores_test.py"],
    deps = ["//tfjest:scores"],
)
"""
  SOURCES = {
      "tfjest/__init__.py": "from tfjest.losses import loss\nfrom tfjest.scores import score\n",
      "tfjest/losses.py": "import tensorflow as tf\n",
      "tfjest/scores.py": "from tfjest import losses\n",
      "tests/build_files_test.py": "import ast\n",
      "tests/losses_test.py": "import tfjest\n",
      "tests/scores_test.py": "from tfjest import scores\n",
  }

  def _problems(self, tfjest_build=TFJEST_BUILD, tests_build=TESTS_BUILD, extra=None,
                extra_builds=None):
    sources = dict(self.SOURCES, **(extra or {}))
    builds = dict({"tfjest": tfjest_build, "tests": tests_build}, **(extra_builds or {}))
    rules = [rule for package, text in builds.items()
             for rule in parse_build(text, package)]
    return find_problems(rules=rules, files=sorted(sources), packages=set(builds),
                         read=sources.__getitem__, checker_target="//tests:build_files_test")

  def test_complete_workspace_has_no_problems(self):
    self.assertEqual(self._problems(), [])

  def test_test_file_without_py_test_is_named(self):
    problems = self._problems(extra={"tests/foo_test.py": "import tfjest\n"})
    self.assertLen(problems, 1)
    self.assertRegex(problems[0], r"^tests/foo_test\.py has no py_test")
    self.assertIn("//tests:foo_test", problems[0])

  def test_py_test_removed_from_build_is_named(self):
    tests_build = self.TESTS_BUILD.replace("scores_test.py", "other.py")
    problems = self._problems(tests_build=tests_build)
    self.assertLen(problems, 1)
    self.assertIn("//tests:scores_test", problems[0])

  def test_module_in_no_py_library_is_named(self):
    problems = self._problems(extra={"tfjest/stats.py": "import tensorflow\n"})
    self.assertLen(problems, 1)
    self.assertRegex(problems[0], r"^tfjest/stats\.py is in the srcs of no py_library")
    self.assertIn("//tfjest:stats", problems[0])

  def test_umbrella_without_target_is_named(self):
    tfjest_build = self.TFJEST_BUILD.replace('srcs = ["__init__.py"]', "srcs = []")
    problems = self._problems(tfjest_build=tfjest_build)
    self.assertTrue(any(p.startswith("tfjest/__init__.py is in the srcs of no py_library") and
                        "//tfjest:tfjest" in p for p in problems), problems)

  def test_subpackage_without_build_is_named(self):
    problems = self._problems(extra={"tfjest/datasets/png.py": "import zlib\n"})
    self.assertLen(problems, 1)
    self.assertRegex(problems[0], r"^tfjest/datasets/png\.py is in the srcs of no py_library "
                     r"or py_binary, and tfjest/datasets/ has no BUILD file. Expected "
                     r"tfjest/datasets/BUILD with a target //tfjest/datasets:png")

  def test_subpackage_module_without_target_is_named(self):
    problems = self._problems(
        extra={"tfjest/datasets/png.py": "import zlib\n"},
        extra_builds={"tfjest/datasets": "filegroup(name = 'build_inputs')\n"})
    self.assertLen(problems, 2)
    self.assertRegex(problems[0], r"^tfjest/datasets/png\.py is in the srcs of no py_library.*"
                     r"//tfjest/datasets:png")
    self.assertRegex(problems[1], r"^//tfjest/datasets:build_inputs is not in the data of "
                     r"//tests:build_files_test")

  def test_missing_dep_is_named(self):
    tfjest_build = self.TFJEST_BUILD.replace('deps = [":losses"]', "deps = []")
    problems = self._problems(tfjest_build=tfjest_build)
    # Reported once, where the import is: fixing //tfjest:scores fixes its dependents too.
    self.assertLen(problems, 1)
    self.assertRegex(problems[0], r"^//tfjest:scores: tfjest/scores\.py imports "
                     r"tfjest/losses\.py.* add //tfjest:losses to its deps")

  def test_transitive_dep_is_enough(self):
    # losses_test imports only `tfjest`; scores_test reaches losses through scores.
    self.assertEqual(self._problems(), [])

  def test_unknown_first_party_dep_is_named(self):
    tests_build = self.TESTS_BUILD.replace('"//tfjest:scores"', '"//tfjest:scorez"')
    problems = self._problems(tests_build=tests_build)
    self.assertIn("//tests:scores_test depends on //tfjest:scorez, which no BUILD file "
                  "defines.", problems)

  def test_checker_without_target_or_data_is_named(self):
    tests_build = self.TESTS_BUILD.replace('"//tfjest:build_inputs", ', "")
    self.assertEqual(self._problems(tests_build=tests_build), [
        "//tfjest:build_inputs is not in the data of //tests:build_files_test, so under "
        "Bazel the check cannot see tfjest/. Add a filegroup(name = \"build_inputs\", srcs = "
        "glob([\"*.py\"]) + [\"BUILD\"]) there and list it."])
    tests_build = self.TESTS_BUILD.replace('"build_files_test"', '"checker"')
    self.assertIn("//tests:build_files_test is missing: nothing would run this check under "
                  "Bazel.", self._problems(tests_build=tests_build))

  def test_lazy_and_relative_imports_count(self):
    sources = {"pkg/__init__.py": "", "pkg/a.py": "def f():\n  from . import b\n",
               "pkg/b.py": "", "pkg/c.py": "import os\n"}
    needed = first_party_imports(sources["pkg/a.py"], "pkg/a.py", sources.__contains__)
    self.assertEqual(needed, {"pkg/b.py"})

  def test_glob_and_label_forms(self):
    rules = parse_build(
        'py_library(name = "x", srcs = glob(["*.py"]) + ["y.py"], '
        'deps = ["//a/b", "@//c:d", "@ext//e:f", ":g"], data = ["z.txt"])\n',
        "p", glob=lambda patterns: ["x.py"])
    self.assertEqual(rules, [Rule("py_library", "//p:x", ["p/x.py", "p/y.py"],
                                  ["//a/b:b", "//c:d", "//p:g"], ["//p:z.txt"])])

  def test_macros_read_as_the_rules_they_wrap(self):
    rules = parse_build(
        'load("//tools:build_defs.bzl", "tfjest_py_test")\n'
        'tfjest_py_test(name = "a_test", size = "small")\n'
        'tfjest_py_binary(name = "prog", deps = [":lib"])\n'
        'tfjest_py_library(name = "lib", srcs = ["lib.py"])\n', "p")
    self.assertEqual(rules, [
        Rule("py_test", "//p:a_test", ["p/a_test.py"], ["//tfjest:tfjest"], []),
        Rule("py_binary", "//p:prog", ["p/prog.py"], ["//p:lib"], []),
        Rule("py_library", "//p:lib", ["p/lib.py"], [], []),
    ])

  def test_one_test_per_file_of_a_group(self):
    rules = parse_build(
        'tfjest_py_tests(srcs = glob(["*_test.py", "sub/*_test.py"]), size = "large", '
        'deps = [":lib"], data = ["//p:x"])\n', "t",
        glob=lambda patterns: ["a_test.py", "sub/b_test.py"])
    self.assertEqual(rules, [
        Rule("py_test", "//t:a_test", ["t/a_test.py"], ["//t:lib"], ["//p:x"]),
        Rule("py_test", "//t:sub/b_test", ["t/sub/b_test.py"], ["//t:lib"], ["//p:x"]),
    ])

  def test_a_test_group_is_one_py_test_of_its_files(self):
    rules = parse_build(
        'tfjest_py_test_group(name = "unit_tests", srcs = ["b_test.py"] + glob(["*_test.py"], '
        'exclude = ["b_test.py"]), size = "large", shard_count = 2)\n', "t",
        glob=lambda patterns: ["a_test.py", "b_test.py"])
    self.assertEqual(rules, [Rule("py_test", "//t:unit_tests", ["t/b_test.py", "t/a_test.py"],
                                  ["//tfjest:tfjest"], [])])

  def test_top_level_names_are_read_where_attributes_use_them(self):
    rules = parse_build(
        'DEPS = [":lib"]\nDATA = ["x.txt"] + glob(["*.json"])\n'
        'py_test(name = "a_test", srcs = ["a_test.py"], deps = DEPS, data = DATA)\n'
        'py_test(name = "b_test", srcs = ["b_test.py"], deps = UNKNOWN)\n', "t",
        glob=lambda patterns: ["r.json"])
    self.assertEqual(rules, [
        Rule("py_test", "//t:a_test", ["t/a_test.py"], ["//t:lib"], ["//t:x.txt", "//t:r.json"]),
        Rule("py_test", "//t:b_test", ["t/b_test.py"], [], []),
    ])

  def test_glob_exclude(self):
    rules = parse_build('py_library(name = "x", srcs = glob(["*.py"], exclude = ["b.py"]))\n',
                        "p", glob=lambda patterns: ["a.py", "b.py"])
    self.assertEqual(rules[0].srcs, ["p/a.py"])

  def test_glob_match_follows_bazel(self):
    self.assertTrue(glob_match("*.py", "a.py"))
    self.assertFalse(glob_match("*.py", "sub/a.py"))
    self.assertTrue(glob_match("**/*.py", "sub/deeper/a.py"))
    self.assertTrue(glob_match("**/*.py", "a.py"))
    self.assertFalse(glob_match("a?.py", "a/.py"))


if __name__ == "__main__":
  absltest.main()
