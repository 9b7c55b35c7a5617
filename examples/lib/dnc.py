"""Divide and Contrast (DnC, Tian, Henaff, van den Oord 2021, arXiv 2105.08054) on a task.

The recipe, in the order a program runs it (`examples/dnc.py`, `benchmarks/dnc.py`):

1. base: a frozen model of the task. Here the reference (`examples.lib.reference`: trained on the
   clean curated split), whose embeddings of the training split are already cached for JEST.
2. divide: k-means on the base's cached image embeddings (`tfjest.cluster_reference`), one
   cluster id per training example.
3. experts: one model per cluster, initialised from the base and trained with the SigLIP loss
   on that cluster's stream only (`cluster_stream`), so that its negatives are hard.
4. distil: one student of the learner's architecture learns, for every example, to predict
   the base's embeddings and those of the example's cluster's expert (`Distilled`: a linear
   regression head per teacher on the student's features, the expert's head routed by cluster
   id; loss `1 - cosine` per tower). The teachers' embeddings are cached once per teacher
   (`tfjest.cache_reference`), so distillation never calls a teacher.

The distilled student is evaluated through its base head (zero-shot in the base's embedding
space; the experts shape the student's features, not the space it is read in).

What each step costs in FLOPs (docs/SPEC.md §7 conventions: forward `F`, training `3F`
per example; the base/reference's training is not counted, as for JEST's reference):
experts `k * steps * 3 F b`, their caches `k * M * F`, distillation `3 F b` per step plus the
heads. `dnc_flops` returns the one-off part and the per-step part.
"""

from typing import Callable, List, Sequence

import keras
import numpy as np
import tensorflow as tf

import tfjest
from examples.lib import data


def divide(cache: tfjest.ReferenceCache, path: str, *, num_clusters: int, seed: int = 0,
           log: Callable[[str], None] = lambda s: None) -> tfjest.Clusters:
  """k-means on the base's cached image embeddings; reused when already computed."""
  clusters = tfjest.cluster_reference(cache, path, num_clusters=num_clusters, seed=seed,
                                      reuse=True)
  how = "reused" if clusters.reused else f"computed ({clusters.rebuild_reason})"
  log(f"clusters: {how}, k={clusters.num_clusters}, sizes {clusters.sizes.tolist()}")
  return clusters


def cluster_stream(task, clusters: tfjest.Clusters, cluster: int, seed: int) -> tf.data.Dataset:
  """The task's training stream restricted to one cluster: `(inputs, meta)` elements."""
  def tag(inputs, meta):
    return inputs, meta, clusters.cluster_of((inputs, meta), task.id_key)

  return (task.stream(seed).batch(256).map(tag).unbatch()
          .filter(lambda inputs, meta, c: tf.equal(c, cluster))
          .map(lambda inputs, meta, c: (inputs, meta)))


def train_experts(task, base: keras.Model, clusters: tfjest.Clusters, *, steps: int,
                  batch_size: int, learning_rate: float, seed: int,
                  log: Callable[[str], None] = lambda s: None) -> List[keras.Model]:
  """One expert per cluster: the base's weights, trained on its cluster's stream; frozen."""
  experts = []
  for c in range(clusters.num_clusters):
    keras.utils.set_random_seed(seed * 1000 + c)
    expert = task.make_model(f"expert_{c}", width=base.width)
    expert(task.example_inputs(1))
    expert.set_weights(base.get_weights())
    expert.compile(optimizer=keras.optimizers.Adam(learning_rate))
    expert.optimizer.build(expert.trainable_variables)  # fit then traces its step once
    stream = (cluster_stream(task, clusters, c, seed).batch(batch_size, drop_remainder=True)
              .map(data.strip_meta()).prefetch(2))
    expert.fit(stream, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    expert.trainable = False
    metrics = task.evaluate(expert)
    log(f"expert {c} ({int(clusters.sizes[c])} examples): {steps} steps, accuracy "
        f"{metrics['accuracy']:.3f}")
    experts.append(expert)
  return experts


class Distilled(keras.Model):
  """A student dual encoder with a regression head per teacher, routed by cluster id.

  Trained with `fit` on `distillation_stream` batches `(inputs, targets)`; called (or
  evaluated) it returns the student's embeddings read through the base head.

  Args:
    student: an unbuilt dual encoder of the task (`image_tower`, `text_tower`).
    num_experts: `k`.
    width: the teachers' embedding width.
    expert_weight: weight of the experts' term in the loss (0: distil from the base alone, the
      ablation that tells what the experts add).
  """

  def __init__(self, student: keras.Model, num_experts: int, width: int,
               expert_weight: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    self.student, self.num_experts, self.width = student, num_experts, width
    self.expert_weight = expert_weight
    self.base_head = keras.layers.Dense(width, use_bias=False, name="base_head")
    self.expert_heads = keras.layers.Dense(num_experts * width, use_bias=False,
                                           name="expert_heads")

  def encode_image(self, image, training=False):
    return keras.ops.normalize(self.base_head(self.student.image_tower(
        image, training=training)), axis=-1)

  def encode_text(self, tokens, training=False):
    return keras.ops.normalize(self.base_head(self.student.text_tower(
        tokens, training=training)), axis=-1)

  def call(self, inputs, training=False):
    # Both heads are built on the first call, so `fit` finds every variable.
    features = self.student.image_tower(inputs["image"], training=training)
    self.expert_heads(features)
    return {"image_embeddings": self.encode_image(inputs["image"], training),
            "text_embeddings": self.encode_text(inputs["tokens"], training)}

  def distillation_loss(self, inputs, targets, training=True):
    """Mean over the two towers of `(1 - cos)` to the base plus `(1 - cos)` to the expert."""
    total = 0.0
    for tower, key, kind in ((self.student.image_tower, "image", "image"),
                             (self.student.text_tower, "tokens", "text")):
      features = tower(inputs[key], training=training)
      base = keras.ops.normalize(self.base_head(features), axis=-1)
      experts = tf.reshape(self.expert_heads(features), [-1, self.num_experts, self.width])
      expert = keras.ops.normalize(tf.gather(experts, targets["cluster"], batch_dims=1),
                                   axis=-1)
      total += tf.reduce_mean(1.0 - tf.reduce_sum(base * targets[f"base_{kind}"], -1))
      total += self.expert_weight * tf.reduce_mean(
          1.0 - tf.reduce_sum(expert * targets[f"expert_{kind}"], -1))
    return total / 2.0

  def train_step(self, batch):
    inputs, targets = batch
    with tf.GradientTape() as tape:
      loss = self.distillation_loss(inputs, targets)
    variables = self.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return {"loss": loss}


def distillation_stream(task, base_cache: tfjest.ReferenceCache,
                        expert_caches: Sequence[tfjest.ReferenceCache],
                        clusters: tfjest.Clusters, *, seed: int,
                        batch_size: int) -> tf.data.Dataset:
  """`(inputs, targets)` batches: the teachers' cached embeddings of each example, routed.

  `targets`: `base_image`, `base_text` `[b, d]`, `expert_image`, `expert_text` `[b, d]` (the
  example's cluster's expert) and `cluster` `[b]`.
  """
  def join(inputs, meta):
    element, key = (inputs, meta), task.id_key
    base = base_cache.values_for(element, key)
    cluster = clusters.values_for(element, key)["cluster"]
    experts = [c.values_for(element, key) for c in expert_caches]
    targets = {"base_image": base["image_embeddings"], "base_text": base["text_embeddings"],
               "cluster": cluster}
    for kind in ("image", "text"):
      stacked = tf.stack([e[f"{kind}_embeddings"] for e in experts], axis=1)  # [b, k, d]
      targets[f"expert_{kind}"] = tf.gather(stacked, cluster, batch_dims=1)
    return inputs, targets

  return task.stream(seed).batch(batch_size, drop_remainder=True).map(join).prefetch(2)


def dnc_flops(task, student: keras.Model, *, num_experts: int, expert_steps: int,
              batch_size: int) -> dict:
  """FLOPs of the recipe: `once` (experts' training and caches) and `per_step` (distillation).

  `num_experts=0`: distillation from the base alone.
  """
  spec = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape[1:], t.dtype),
                               task.example_inputs(1))
  forward = tfjest.forward_flops(student.student, spec)
  heads = 2 * 2 * student.width * student.width * (num_experts + 1)  # two towers, k + 1 heads
  experts = num_experts * expert_steps * 3 * forward * batch_size
  caches = num_experts * task.training_examples * forward
  return {"once": float(experts + caches), "experts_training": float(experts),
          "experts_caches": float(caches),
          "per_step": float(3 * (forward + heads) * batch_size)}


def distill(task, base_cache: tfjest.ReferenceCache, expert_caches, clusters, *, steps: int,
            eval_every: int, batch_size: int, learning_rate: float, seed: int, width: int,
            expert_steps: int, expert_weight: float = 1.0,
            log: Callable[[str], None] = lambda s: None):
  """Trains the distilled student; returns `(model, curve)` in the harness's curve format.

  The curve's `flops` start at the experts' one-off cost (`dnc_flops`), so that compute to a
  target includes them; `steps` count distillation steps only. `expert_weight=0` distils from
  the base alone (no expert is paid for).
  """
  keras.utils.set_random_seed(seed)
  model = Distilled(task.make_model("student", width=width), clusters.num_clusters,
                    base_cache.array("image_embeddings").shape[1],
                    expert_weight=expert_weight, name="distilled")
  model(task.example_inputs(1))
  model.compile(optimizer=keras.optimizers.Adam(learning_rate))
  model.optimizer.build(model.trainable_variables)  # fit then traces its step once
  flops = dnc_flops(task, model, num_experts=clusters.num_clusters if expert_weight else 0,
                    expert_steps=expert_steps, batch_size=batch_size)
  curve = {"steps": [], "flops": [], "corrupted_share": []}

  def record(step):
    metrics = task.evaluate(model)
    curve["steps"].append(step)
    curve["flops"].append(flops["once"] + step * flops["per_step"])
    curve["corrupted_share"].append(None)
    for k, v in metrics.items():
      curve.setdefault(k, []).append(v)
    log(f"dnc seed={seed} step {step}: " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items()))

  class Evaluate(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      record((epoch + 1) * eval_every)

  record(0)
  stream = distillation_stream(task, base_cache, expert_caches, clusters, seed=seed,
                               batch_size=batch_size)
  model.fit(stream, steps_per_epoch=eval_every, epochs=steps // eval_every, verbose=0,
            shuffle=False, callbacks=[Evaluate()])
  curve.update(flops_per_step={"total": flops["per_step"]}, dnc_flops=flops,
               super_batch_size=batch_size, dataset_size=task.training_examples,
               examples_read=steps * batch_size + expert_steps * batch_size * np.int64(
                   clusters.num_clusters).item())
  return model, curve
