"""README.md keeps its promises: the dual-encoder and ReLA examples run, the `select` table is the
API."""

import ast
import inspect
import os
import re

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest

_README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")
_BLOCK_MARKER = "<!-- tests/meta/readme_test.py runs the next code block. -->"
# Table defaults that document what a `None` in the signature resolves to; each is checked by
# behaviour in `test_filter_ratio_defaults_to_0_8`.
_RESOLVED_DEFAULTS = {"filter_ratio": 0.8}


def _readme():
  with open(_README, encoding="utf-8") as f:
    return f.read()


def _section(text, heading):
  """The lines under `heading` (a whole `## ...` line) up to the next `## ` heading."""
  lines = text.splitlines()
  start = lines.index(heading) + 1
  end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
  return lines[start:end]


def _dual_encoder_block(text, heading="## Model contracts"):
  """The code block after the marker in the section under `heading`."""
  lines = _section(text, heading)
  start = lines.index(_BLOCK_MARKER) + 1
  if lines[start] != "```python":
    raise ValueError(f"Expected a ```python block right after the marker. "
                     f"Received: {lines[start]!r}")
  end = lines.index("```", start + 1)
  return "\n".join(lines[start + 1:end])


def _table(text):
  """`[(argument, default text)]` from the table under the `tfjest.select` heading."""
  rows = []
  for line in _section(text, "## The arguments of `tfjest.select`"):
    if not line.startswith("| `"):
      continue
    name, default, _ = line.strip().strip("|").split("|", 2)
    rows.append((name.strip().strip("`"), default.strip()))
  return rows


def _parse_default(cell):
  if cell == "required":
    return inspect.Parameter.empty
  if not re.fullmatch(r"`[^`]+`", cell):
    raise ValueError(f"A default must be `literal` or required. Received: {cell!r}")
  return ast.literal_eval(cell[1:-1])


def _table_problems(text, signature):
  """What differs between the README's table and `signature`, one line per argument."""
  documented = _table(text)
  names = [name for name, _ in documented]
  params = list(signature.parameters.values())
  problems = []
  for name in sorted(set(names) - set(signature.parameters)):
    problems.append(f"`{name}` is in the README table but not an argument of tfjest.select")
  for param in params:
    if param.name not in names:
      problems.append(f"`{param.name}` is an argument of tfjest.select but not in the README table")
  if not problems:
    for i, (name, param) in enumerate(zip(names, params)):
      if name != param.name:
        problems.append(f"row {i + 1} of the README table is `{name}`; argument {i + 1} of "
                        f"tfjest.select is `{param.name}`")
        break
  for name, cell in documented:
    if name not in signature.parameters:
      continue
    expected = signature.parameters[name].default
    if expected is None and name in _RESOLVED_DEFAULTS:
      expected = _RESOLVED_DEFAULTS[name]
    try:
      default = _parse_default(cell)
    except (ValueError, SyntaxError) as e:
      problems.append(f"`{name}`: {e}")
      continue
    if type(default) is not type(expected) or default != expected:
      shown = "required" if expected is inspect.Parameter.empty else repr(expected)
      problems.append(f"`{name}` defaults to {shown} in tfjest.select; the README table says "
                      f"{cell}")
  return problems


class RelaExampleTest(tf.test.TestCase):

  def test_rela_example_runs(self):
    namespace = {"__name__": "readme_rela"}
    block = _dual_encoder_block(_readme(), "## ReLA: a prior model's representations as early "
                                "training targets")
    exec(compile(block, _README, "exec"), namespace)  # pylint: disable=exec-used
    self.assertEqual(int(namespace["aid"].switch_step), 2)


class DualEncoderExampleTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("uniform", dict(method="uniform")),
      ("hard_learner", dict(method="jest", num_chunks=2, score="hard_learner")),
  )
  def test_trains_through_select(self, select_args):
    namespace = {"__name__": "readme_dual_encoder"}
    code = compile(_dual_encoder_block(_readme()), _README, "exec")
    exec(code, namespace)  # pylint: disable=exec-used
    keras.utils.set_random_seed(0)
    model = namespace["DualEncoder"]()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    pairs = tf.data.Dataset.from_tensor_slices({
        "image": rng.normal(size=(32, 16, 16, 3)).astype(np.float32),
        "text": rng.integers(0, 1000, size=(32, 5)).astype(np.int32),
    })
    selector = tfjest.select(learner=model, batch_size=8, super_batch_size=16, **select_args)
    history = model.fit(pairs.apply(selector), epochs=1, verbose=0).history
    self.assertEqual(int(model.optimizer.iterations.numpy()), 2)
    self.assertTrue(np.isfinite(history["loss"][0]), history)


class DivideAndContrastBlockTest(tf.test.TestCase):

  def test_the_block_runs_and_accounts_for_every_example(self):
    namespace = {"__name__": "readme_divide_and_contrast"}
    block = _dual_encoder_block(
        _readme(), "## Divide and Contrast: cluster-conditioned super-batches")
    exec(compile(block, _README, "exec"), namespace)  # pylint: disable=exec-used
    self.assertEqual(int(namespace["model"].optimizer.iterations), 4)
    stats = namespace["grouping"].stats.result()
    self.assertGreaterEqual(stats["emitted"], 4 * 32)
    self.assertEqual(stats["left_over"], 0)  # an endless stream leaves nothing over
    self.assertLessEqual(stats["emitted"], stats["read"])


class SelectTableTest(tf.test.TestCase):

  def test_table_matches_signature(self):
    problems = _table_problems(_readme(), inspect.signature(tfjest.select))
    self.assertEmpty(problems, "\n".join(problems))

  def test_a_renamed_or_changed_row_is_named(self):
    text = _readme()
    renamed = text.replace("| `num_chunks` | `16` |", "| `chunks` | `16` |")
    changed = text.replace("| `seed` | `0` |", "| `seed` | `1` |")
    self.assertNotEqual(renamed, text)
    self.assertNotEqual(changed, text)
    signature = inspect.signature(tfjest.select)
    self.assertEqual(_table_problems(renamed, signature), [
        "`chunks` is in the README table but not an argument of tfjest.select",
        "`num_chunks` is an argument of tfjest.select but not in the README table"])
    self.assertEqual(_table_problems(changed, signature),
                     ["`seed` defaults to 0 in tfjest.select; the README table says `1`"])
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("| `temperature` |"))
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    self.assertEqual(_table_problems("\n".join(lines), signature),
                     ["row 9 of the README table is `seed`; argument 9 of tfjest.select is "
                      "`temperature`"])

  def test_filter_ratio_defaults_to_0_8(self):
    self.assertIsNone(inspect.signature(tfjest.select).parameters["filter_ratio"].default)
    # Neither filter_ratio nor super_batch_size: N = 8 / (1 - 0.8) = 40, one batch per 40.
    selected = tf.data.Dataset.range(80).apply(tfjest.select(batch_size=8, method="uniform"))
    self.assertEqual([len(batch) for batch in selected.as_numpy_iterator()], [8, 8])


class NonFiniteInputsTest(tf.test.TestCase):

  def test_the_filter_in_behaviour_you_should_know_drops_nan_inputs(self):
    section = "\n".join(_section(_readme(), "## Behaviour you should know"))
    recipe = re.search(r"`(dataset\.filter\(.*?\))`", section).group(1)
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant([[np.nan, 1.0], [0.5, 1.0], [np.inf, 0.0]]), tf.constant([0, 1, 2])))
    kept = eval(recipe, {"dataset": dataset, "tf": tf})  # pylint: disable=eval-used
    self.assertEqual([int(y) for _, y in kept], [1])


if __name__ == "__main__":
  tf.test.main()
