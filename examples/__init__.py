"""tfjest's examples: thin programs at the top, their shared rooms in `examples.lib`.

Rooms (`examples/lib/`, one per idea; importable from the repository root, e.g.
`from examples.lib import harness`):

* `data`: the offline captions dataset (`tfjest.datasets`) as model inputs: tokenizer, the
  element map, in-memory splits and streams, the corruption counter.
* `models`: the captions dual encoder (on `tfjest.SigLIPDualEncoder`) and classifier.
* `evaluation`: zero-shot accuracy and recall@1 on the clean test split.
* `tasks`: the captions task and the toy-pairs task behind one interface.
* `reference`: the one recipe for the frozen reference (train, save, load, cache).
* `strategies`: the `tf.distribute` strategy of a program's `--strategy`.
* `harness`: one run (a learner trained on selected data, with or without a strategy).
* `rela`: ReLA's priors (reference, another architecture, random) and their cached targets.
* `dnc`: the Divide and Contrast recipe (clusters, one expert per cluster, distillation).
* `plots`: curves as PNG files.

Programs (run from the repository root; each docstring gives its command):

    python -m examples.quickstart       # toy pairs: what JEST avoids, in a minute
    python -m examples.demo             # make demo: JEST against uniform on the captions data
    python -m examples.train_reference  # a reference saved as .keras
    python -m examples.train_learner    # any strategy: default, mirrored, multi_worker, tpu
    python -m examples.rela             # ReLA: a prior's targets early, then the SigLIP loss
    python -m examples.dnc              # Divide and Contrast: k-means, experts, distillation

`tfjest.efficiency` (in the library) turns the harness's curves into docs/SPEC.md §9's
speedups.
"""
