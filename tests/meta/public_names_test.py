"""Every public `tfjest.*` name stays importable as it is, wherever its module moves.

The list below is the public API's contract, written out by hand on purpose: a name that
disappears from `tfjest/__init__.py` (a move into a sub-package that forgot the re-export, a
rename) fails here, and so does a name added to `__all__` without being added here (so that
adding public API is a visible decision). Each name is imported in a fresh interpreter with
`from tfjest import <name>`, as a user writes it, and must have a docstring.
"""

import subprocess
import sys

from absl.testing import absltest

PUBLIC_NAMES = (
    # The selection transformation and its parts.
    "select", "Selector", "Rule", "super_batch_size_for", "SelectionStats",
    "SelectionStatsCallback", "models_read",
    # The maths: scores, selection rules, losses.
    "DenseScores", "DiagonalScores", "PairwiseScores", "GlobalScores", "batch_score",
    "conditional_gains", "joint_selection", "independent_selection", "uniform_selection",
    "Embeddings", "per_example_loss", "siglip_loss", "siglip_replica_loss",
    "sigmoid_pair_loss_block", "sigmoid_pair_loss_chunk_sums", "sigmoid_pair_loss_diagonal",
    "SigLIPDualEncoder",
    # Cost and measurement.
    "StepCost", "step_cost", "forward_flops", "selection_flops", "efficiency",
    # Cost levers.
    "ReferenceCache", "cache_reference", "InputShards", "OnlineProxy", "multi_resolution",
    # tf.distribute and accelerators.
    "attach", "detach", "ReplicaSelection", "TrainStepSelection", "ensure_multi_worker_fit",
    # Checkpoints.
    "backup_and_restore", "deterministic_options", "selection_checkpoint",
    # ReLA.
    "PriorTargets", "prior_targets", "ReLAAid", "rela_switch_update", "epoch_subsets",
    # Divide and Contrast.
    "Clusters", "cluster_reference", "kmeans", "by_cluster",
    "__version__",
)

_PROBE = """
import tfjest
missing, undocumented = [], []
for name in {names!r}:
  try:
    exec("from tfjest import " + name)
  except ImportError:
    missing.append(name)
    continue
  value = getattr(tfjest, name)
  if name != "__version__" and not (getattr(value, "__doc__", None) or "").strip():
    undocumented.append(name)
print("MISSING", sorted(missing))
print("UNDOCUMENTED", sorted(undocumented))
print("ALL", sorted(tfjest.__all__))
"""


class PublicNamesTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    result = subprocess.run([sys.executable, "-c", _PROBE.format(names=PUBLIC_NAMES)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    cls.lines = {line.split(" ", 1)[0]: eval(line.split(" ", 1)[1])  # pylint: disable=eval-used
                 for line in result.stdout.splitlines()
                 if line.split(" ", 1)[0] in ("MISSING", "UNDOCUMENTED", "ALL")}

  def test_every_public_name_imports(self):
    self.assertEqual(self.lines["MISSING"], [])

  def test_every_public_name_is_documented(self):
    self.assertEqual(self.lines["UNDOCUMENTED"], [])

  def test_all_lists_exactly_the_public_names(self):
    self.assertEqual(self.lines["ALL"], sorted(PUBLIC_NAMES))

  def test_the_list_has_no_duplicates(self):
    self.assertLen(set(PUBLIC_NAMES), len(PUBLIC_NAMES))


if __name__ == "__main__":
  absltest.main()
