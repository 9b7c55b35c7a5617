r"""The per-example store at scale: build, disk, memory and the streamed join's speed.

For each cell (M examples, embedding width d) of a small synthetic stream (per example an 8x8x3
uint8 image (`--image_side`), 16 int64 tokens and an int64 id, made from the id: the same
examples at every M), cut into input shards of `--shard_size` examples, a tiny dual-encoder
reference (the store is what is measured) is cached with `tfjest.cache_reference`, and each
phase runs in a fresh subprocess so that its peak resident memory (VmHWM) is its own:

- build: `cache_reference` over the M examples: seconds, examples/s, bytes on disk per example;
- open: `ReferenceCache.load` (the metadata only);
- join: 100 super-batches selected by `select(reference_cache=...)` from the stream joined with
  `cache.join(id_key="id")` (streamed, ids and input fingerprints checked);
- speed: input shard 0 as a user reads web data (TFRecord files of serialised
  `tf.train.Example`s), read plainly and through the streamed join, side by side in one
  process, interleaved, `--repeats` times (median examples/s, and CPU microseconds per example
  of the process, all threads, which a loaded machine disturbs less, both from each pass's
  first batch on; the seconds to that first batch, the iterator's start-up, apart): each
  record parsed
  (`parse_single_example`, in parallel; joined with ids checked, and ids and inputs checked);
  records parsed 256 at a time (`parse_example`) and unbatched (joined as batches, ids and
  inputs checked, then unbatched); and in memory (`from_tensor_slices`) for transparency. It
  reads one input shard, so it does not depend on M (run it on a small cell:
  `--cells=100000:64,100000:512 --shard_size=100000 --phases=build,speed`);
- join_shards (not a default phase): as join, but each input shard joined with its own value
  shard (`cache.join(id_key="id", inputs=[...])`, the join a MultiWorkerMirroredStrategy
  worker uses for its shards): startup and peak RSS as the number of shards grows;
- speed_shards (not a default phase): all M examples in shards of `--shard_size`, read
  interleaved without tfjest (one function of the shard index), shard after shard through the
  streamed join, and each input shard joined with its own (a list of datasets, and
  `tfjest.InputShards`): examples/s and CPU per example, so the cost per shard shows;
- in memory (at the sizes of `--in_memory_sizes`, d = 64): today's join by id
  (`select(reference_cache=...)` on a stream that was not joined): its load time and the peak
  RSS of 100 selected super-batches.

Results: one JSON file per cell under `--results_dir` (resumable per cell and phase: a phase
already recorded is not run again); the store is deleted after its cell (disk). The table is
printed from the files.

    python -m benchmarks.store_scale --cells=1000000:64,20000000:64,4000000:64,1000000:512,4000000:512

`--smoke` runs one tiny cell, its phases in this process (seconds; no peak RSS per phase). d = 512 at 20 M would take 82 GB of disk: not a default
cell on a 74 GB disk. The bar (issue 23): peak RSS of opening and joining at 20 M within 10% of
the figure at 1 M and at most 1.5 GB (d = 64); the join keeps >= 80% of the plain stream's
examples/s.
"""

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_CELLS = flags.DEFINE_list("cells", ["1000000:64", "20000000:64", "4000000:64", "1000000:512",
                                     "4000000:512"], "Cells M:d, run in this order.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 250_000, "Examples per input shard.")
_CHUNK = flags.DEFINE_integer("chunk", 256, "Examples per reference call (the build's batch_size).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "select's batch size b.")
_SUPER = flags.DEFINE_integer("super_batch_size", 1024, "select's super-batch size N.")
_CHUNKS = flags.DEFINE_integer("num_chunks", 16, "select's JEST chunk count K.")
_STEPS = flags.DEFINE_integer("steps", 100, "Super-batches read through the join.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved passes per stream (median).")
_IN_MEMORY = flags.DEFINE_list("in_memory_sizes", ["1000000"],
                               "M at which today's in-memory join is measured (d = 64).")
_RESULTS = flags.DEFINE_string("results_dir", "benchmarks/results/store_scale",
                               "One JSON file per cell.")
_WORK = flags.DEFINE_string("work_dir", None, "Where stores and input files go (default: a "
                            "temporary directory; deleted after each cell).")
_SMOKE = flags.DEFINE_bool("smoke", False, "One tiny cell (M = 2048, d = 8, 1024 per shard, "
                           "b = 16, N = 64, K = 2, 2 steps, 1 pass), its phases in this process.")
_PHASES = flags.DEFINE_list("phases", list(("build", "open", "join", "speed", "in_memory")),
                            "Phases to run (those recorded are skipped).")
_IMAGE_SIDE = flags.DEFINE_integer(
    "image_side", 8, "Side of the stream's square uint8 RGB images (8: 192 bytes, a tiny example "
    "that makes the values' bytes dominate; 64: 12 KB, about a small web JPEG's bytes, without "
    "its decoding). Results of another side than 8 go to files named ..._image<side>.json.")
_PHASE = flags.DEFINE_string("phase", None, "Internal: run this phase and print JSON.")
_M = flags.DEFINE_integer("m", 0, "Internal: the cell's M.")
_D = flags.DEFINE_integer("d", 0, "Internal: the cell's d.")

TOKENS, VOCAB = 16, 1000


def _image():
  """The shape of one example's image (`--image_side`)."""
  return (_IMAGE_SIDE.value, _IMAGE_SIDE.value, 3)
PHASES = ("build", "open", "join", "join_shards", "speed", "speed_shards", "in_memory")


def _peak_rss_bytes() -> int:
  """This process's peak resident memory (VmHWM)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  return 0


# The stream and the models (imported lazily: the parent process runs no TensorFlow).
def _examples(start, stop):
  """Examples `start..stop-1` as a batch: the same for an id whatever the M."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ids = tf.range(start, stop, dtype=tf.int64)
  n = tf.shape(ids)[0]
  seed = tf.stack([start, tf.constant(7, tf.int64)])
  image = tf.random.stateless_uniform(tf.concat([[n], _image()], 0), seed, maxval=256,
                                      dtype=tf.int32)
  text = tf.random.stateless_uniform([n, TOKENS], seed + 1, maxval=VOCAB, dtype=tf.int64)
  return {"image": tf.cast(image, tf.uint8), "text": text, "id": ids}


def input_shard(index, m, shard_size):
  """Input shard `index` of the synthetic stream (single examples, in id order)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  start, stop = index * shard_size, min(m, (index + 1) * shard_size)
  starts = tf.data.Dataset.range(start, stop, 1024)
  return starts.map(lambda s: _examples(s, tf.minimum(s + 1024, stop))).unbatch()


def input_shards(m, shard_size):
  return [input_shard(i, m, shard_size) for i in range((m + shard_size - 1) // shard_size)]


def dual_encoder(d, seed, name):
  """A tiny dual encoder of width `d` on the stream's images and tokens."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfjest import models  # pylint: disable=g-import-not-at-top

  class Tiny(models.SigLIPDualEncoder):

    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      init = keras.initializers.GlorotUniform
      self.image_tower = keras.layers.Dense(d, kernel_initializer=init(seed))
      self.text_tower = keras.layers.Embedding(VOCAB, d, embeddings_initializer=init(seed + 1))

    def call(self, x, training=False):
      side = _IMAGE_SIDE.value
      image = tf.reshape(tf.cast(x["image"], tf.float32) / 255.0, [-1, side * side * 3])
      text = tf.reduce_mean(self.text_tower(x["text"]), axis=1)
      return self.embeddings(self.image_tower(image), text)

  model = Tiny(name=name)
  model.compile(optimizer=keras.optimizers.SGD(0.01))
  model({"image": tf.zeros([1, *_image()], tf.uint8), "text": tf.zeros([1, TOKENS], tf.int64)})
  return model


def write_tfrecords(path, dataset):
  """`dataset`'s examples as serialised `tf.train.Example`s (raw image bytes), one file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feature = tf.train.Feature
  with tf.io.TFRecordWriter(path + ".tmp") as writer:
    for b in dataset.batch(4096):
      image, text, ids = b["image"].numpy(), b["text"].numpy(), b["id"].numpy()
      for i in range(len(ids)):
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            "image": feature(bytes_list=tf.train.BytesList(value=[image[i].tobytes()])),
            "text": feature(int64_list=tf.train.Int64List(value=text[i])),
            "id": feature(int64_list=tf.train.Int64List(value=[ids[i]]))})).SerializeToString())
  os.replace(path + ".tmp", path)


def read_tfrecords(path, batched=False):
  """What a user reads: the files, each record parsed into the example (parallel, in order).

  With `batched`, records are parsed 256 at a time (`parse_example`) and left as batches."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = {"image": tf.io.FixedLenFeature([], tf.string),
          "text": tf.io.FixedLenFeature([TOKENS], tf.int64),
          "id": tf.io.FixedLenFeature([], tf.int64)}

  def parse(record):
    e = (tf.io.parse_example if batched else tf.io.parse_single_example)(record, spec)
    image = tf.io.decode_raw(e["image"], tf.uint8)
    return {"image": tf.reshape(image, [-1, *_image()] if batched else _image()), "text": e["text"],
            "id": e["id"]}

  records = tf.data.TFRecordDataset(path, buffer_size=1 << 20)
  if batched:
    return records.batch(256).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                  deterministic=True)
  return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def examples_per_second(datasets, repeats, batch_size=256):
  """Per dataset: the median examples/s and CPU us per example of one pass in its steady
  state (from its first batch on), the passes' rates, and the median seconds to the first
  batch (the iterator's start-up: Grappler's optimisation of every tf.data function, the
  threads, the first blocks), over `repeats` interleaved passes.

  The start-up is once per iterator (an epoch, an input shard's pipeline inside `interleave`
  is not one); in a pass of 100,000 tiny examples (0.2-0.3 s) it would otherwise weigh as
  much as the rate being measured (the join's start-up is about 35 ms, a plain stream's 5).
  """
  rates = {name: [] for name in datasets}
  cpu = {name: [] for name in datasets}
  first = {name: [] for name in datasets}
  for _ in range(repeats):
    for name, dataset in datasets.items():
      start = time.perf_counter()
      batches = iter(dataset.batch(batch_size).prefetch(2))
      next(batches)
      steady, used, count = time.perf_counter(), _cpu_seconds(), 0
      first[name].append(steady - start)
      for b in batches:
        count += int(b["id"].shape[0])
      if not count:
        raise ValueError(f"{name}: one batch of {batch_size} or fewer examples; a steady-state "
                         f"rate needs more (use a larger --shard_size)")
      rates[name].append(count / (time.perf_counter() - steady))
      cpu[name].append(1e6 * (_cpu_seconds() - used) / count)
  median = lambda d: {name: statistics.median(v) for name, v in d.items()}
  return median(rates), median(cpu), rates, median(first)


def _cpu_seconds():
  """This process's CPU time, all threads (user + system)."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _store_path(work, m, d):
  return os.path.join(work, f"store-{m}-{d}")


def run_phase(phase, m, d, work, shard_size):
  """One phase of cell (m, d), in this (fresh) process; returns its figures."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfjest  # pylint: disable=g-import-not-at-top
  path = _store_path(work, m, d)
  base = _peak_rss_bytes()
  out = {}
  if phase == "build":
    reference = dual_encoder(d, 1, "reference")
    start = time.perf_counter()
    cache = tfjest.cache_reference(reference, input_shards(m, shard_size), path, id_key="id",
                                   batch_size=_CHUNK.value, overwrite=True)
    seconds = time.perf_counter() - start
    disk = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    out = {"seconds": seconds, "examples_per_s": m / seconds, "shards": cache.num_shards,
           "disk_bytes": disk, "disk_bytes_per_example": disk / m}
  elif phase == "open":
    start = time.perf_counter()
    cache = tfjest.ReferenceCache.load(path)
    out = {"seconds": time.perf_counter() - start, "num_examples": cache.num_examples}
  elif phase in ("join", "join_shards", "in_memory"):
    start = time.perf_counter()
    cache = tfjest.ReferenceCache.load(path)
    stream = input_shards(m, shard_size)
    if phase == "join_shards":  # each input shard joined with its value shard, interleaved
      stream = cache.join(id_key="id", inputs=stream)
    else:  # shard after shard, in order
      stream = stream[0] if len(stream) == 1 else tf.data.Dataset.range(len(stream)).interleave(
          lambda i: input_shard_by_tensor(i, m, shard_size), cycle_length=1)
      if phase == "in_memory":
        len(cache.ids)  # the whole store into memory, as select's join by id does
        out["load_seconds"] = time.perf_counter() - start
      else:
        stream = stream.apply(cache.join(id_key="id"))
    out["setup_seconds"] = time.perf_counter() - start
    selector = tfjest.select(learner=dual_encoder(d, 0, "learner"), reference_cache=cache,
                             id_key="id", batch_size=_BATCH.value,
                             super_batch_size=_SUPER.value, num_chunks=_CHUNKS.value, seed=0)
    start = time.perf_counter()
    steps, first = 0, None
    for _ in stream.shuffle(4 * _SUPER.value, seed=0).apply(selector).take(_STEPS.value):
      steps += 1
      first = first or time.perf_counter()
    end = time.perf_counter()
    out.update({"steps": steps, "seconds": end - start, "first_step_seconds": first - start,
                "examples_read_per_s": (steps - 1) * _SUPER.value / max(end - first, 1e-9)})
  elif phase == "speed":
    cache = tfjest.ReferenceCache.load(path)
    shard = input_shard(0, m, shard_size)
    records = os.path.join(
        work, f"input-{shard_size}-{min(m, shard_size)}-image{_IMAGE_SIDE.value}.tfrecord")
    if not os.path.exists(records):
      write_tfrecords(records, shard)
    on_disk, batches = read_tfrecords(records), read_tfrecords(records, batched=True)
    arrays = next(iter(shard.batch(shard_size)))
    in_memory = tf.data.Dataset.from_tensor_slices(arrays)
    join = lambda verify: cache.join(id_key="id", shards=[0], verify_inputs=verify)
    datasets = {"tfrecord plain": on_disk,
                "tfrecord joined (ids)": on_disk.apply(join(False)),
                "tfrecord joined (ids, inputs)": on_disk.apply(join(True)),
                "tfrecord batched plain": batches.unbatch(),
                # no join: the plain batches carrying two more features of the values' shapes
                # (zeros), as the joined stream carries the values through unbatch and batch
                "tfrecord batched plain + values' features": batches.map(
                    lambda b: add_zeros(b, cache)).unbatch(),
                "tfrecord batched joined (ids, inputs)": batches.apply(join(True)).unbatch(),
                "memory plain": in_memory,
                "memory joined (ids, inputs)": in_memory.apply(join(True))}
    median, cpu, rates, first = examples_per_second(datasets, _REPEATS.value)
    out = {"examples": int(arrays["id"].shape[0]), "examples_per_s": median,
           "cpu_us_per_example": cpu, "passes": rates, "first_batch_seconds": first}
  elif phase == "speed_shards":
    cache = tfjest.ReferenceCache.load(path)
    count = -(-m // shard_size)
    by_tensor = lambda i: input_shard_by_tensor(i, m, shard_size)
    listed = input_shards(m, shard_size)
    datasets = {
        "shards interleaved, plain": tf.data.Dataset.range(count).interleave(
            by_tensor, cycle_length=4),
        "shard after shard, joined": tf.data.Dataset.range(count).interleave(
            by_tensor, cycle_length=1).apply(cache.join(id_key="id")),
        "input shards (a list) joined": cache.join(id_key="id", inputs=listed),
        "input shards (InputShards) joined": cache.join(
            id_key="id", inputs=tfjest.InputShards(by_tensor, count))}
    median, cpu, rates, first = examples_per_second(datasets, _REPEATS.value)
    out = {"examples": m, "shards": count, "examples_per_s": median,
           "cpu_us_per_example": cpu, "passes": rates, "first_batch_seconds": first}
  out.update({"base_rss_bytes": base, "peak_rss_bytes": _peak_rss_bytes()})
  return out


def add_zeros(batch, cache):
  """`batch` with zeros of each joined value's shape and dtype, as the join's features."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  n = tf.shape(batch["id"])[0]
  values = cache.metadata["values"]
  return dict(batch, **{f"_zeros_{k}": tf.zeros(tf.concat([[n], v["shape"]], 0), v["dtype"])
                        for k, v in values.items()})


def input_shard_by_tensor(index, m, shard_size):
  """`input_shard` for a tensor `index` (inside `interleave`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  start = index * shard_size
  stop = tf.minimum(tf.cast(m, tf.int64), start + shard_size)
  starts = tf.data.Dataset.range(start, stop, 1024)
  return starts.map(lambda s: _examples(s, tf.minimum(s + 1024, stop))).unbatch()


def _cells():
  if _SMOKE.value:
    return [(2048, 8)]
  return [tuple(int(v) for v in c.split(":")) for c in _CELLS.value]


def _read(path):
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def _write(path, results):
  with open(path + ".partial", "w") as f:
    json.dump(results, f, indent=1)
  os.replace(path + ".partial", path)


def _gb(v):
  return "-" if v is None else f"{v / 1e9:.2f}"


def table(all_results):
  """The markdown table of the recorded cells."""
  lines = ["| M | d | build s | build ex/s | disk B/ex | RSS build GB | RSS open GB | "
           "RSS join (100 sb) GB | plain TFRecord ex/s | joined ex/s (ids / +inputs) | "
           "kept | in memory: load s, RSS GB |",
           "|" + "---|" * 12]
  for r in all_results:
    p = r["phases"]
    get = lambda phase, key: p.get(phase, {}).get(key)
    speed = p.get("speed", {}).get("examples_per_s", {})
    plain, ids, both = (speed.get(k) for k in ("tfrecord plain", "tfrecord joined (ids)",
                                               "tfrecord joined (ids, inputs)"))
    mem = p.get("in_memory")
    lines.append("| " + " | ".join([
        f"{r['m']:,}", str(r["d"]),
        "-" if get("build", "seconds") is None else f"{get('build', 'seconds'):.0f}",
        "-" if get("build", "examples_per_s") is None
        else f"{get('build', 'examples_per_s'):,.0f}",
        "-" if get("build", "disk_bytes_per_example") is None
        else f"{get('build', 'disk_bytes_per_example'):.0f}",
        _gb(get("build", "peak_rss_bytes")), _gb(get("open", "peak_rss_bytes")),
        _gb(get("join", "peak_rss_bytes")),
        "-" if plain is None else f"{plain:,.0f}",
        "-" if ids is None else f"{ids:,.0f} / {both:,.0f}",
        "-" if not plain else f"{ids / plain:.0%} / {both / plain:.0%}",
        "-" if not mem else f"{mem['load_seconds']:.1f} s, {_gb(mem['peak_rss_bytes'])}",
    ]) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  if _PHASE.value:
    print("RESULT " + json.dumps(run_phase(_PHASE.value, _M.value, _D.value, _WORK.value,
                                           _SHARD_SIZE.value)), flush=True)
    return
  shard_size = 1024 if _SMOKE.value else _SHARD_SIZE.value
  if _SMOKE.value:
    flags.FLAGS.batch_size, flags.FLAGS.super_batch_size, flags.FLAGS.steps = 16, 64, 2
    flags.FLAGS.num_chunks = 2
    flags.FLAGS.repeats, flags.FLAGS.phases = 1, ["build", "open", "join", "join_shards", "speed",
                                                    "speed_shards"]
  results_dir = _RESULTS.value
  os.makedirs(results_dir, exist_ok=True)
  work = _WORK.value or tempfile.mkdtemp(prefix="store_scale-")
  os.makedirs(work, exist_ok=True)
  in_memory = {int(v) for v in _IN_MEMORY.value}
  done = []
  for m, d in _cells():
    side = "" if _IMAGE_SIDE.value == 8 else f"_image{_IMAGE_SIDE.value}"
    file = os.path.join(results_dir, f"{'smoke-' if _SMOKE.value else ''}M{m}_d{d}{side}.json")
    results = _read(file) or {"m": m, "d": d, "shard_size": shard_size, "chunk": _CHUNK.value,
                              "batch_size": _BATCH.value, "super_batch_size": _SUPER.value,
                              "phases": {}}
    phases = [p for p in PHASES if p in _PHASES.value and (
        p != "in_memory" or (m in in_memory and d == 64) or _SMOKE.value)]
    for phase in phases:
      if phase in results["phases"]:
        continue
      if phase != "build" and not os.path.exists(_store_path(work, m, d)):
        results["phases"].pop("build", None)  # its store is gone: build it again first
        for again in ("build", phase):
          results["phases"][again] = _subprocess(again, m, d, work, shard_size)
          _write(file, results)
        continue
      results["phases"][phase] = _subprocess(phase, m, d, work, shard_size)
      _write(file, results)
    shutil.rmtree(_store_path(work, m, d), ignore_errors=True)
    done.append(results)
  if not _WORK.value:
    shutil.rmtree(work, ignore_errors=True)
  print(table(done), flush=True)


def _subprocess(phase, m, d, work, shard_size):
  if _SMOKE.value:  # in this process: seconds, but no peak RSS of its own
    start = time.perf_counter()
    result = run_phase(phase, m, d, work, shard_size)
    result["wall_seconds"] = time.perf_counter() - start
    print(f"M={m:,} d={d} {phase}: {json.dumps(result)}", flush=True)
    return result
  command = [sys.executable, "-m", "benchmarks.store_scale", f"--phase={phase}", f"--m={m}",
             f"--d={d}", f"--work_dir={work}", f"--shard_size={shard_size}",
             f"--chunk={_CHUNK.value}", f"--batch_size={_BATCH.value}",
             f"--super_batch_size={_SUPER.value}", f"--steps={_STEPS.value}",
             f"--num_chunks={_CHUNKS.value}",
             f"--repeats={_REPEATS.value}", f"--image_side={_IMAGE_SIDE.value}"]
  start = time.perf_counter()
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
  if done.returncode or not lines:
    raise RuntimeError(f"phase {phase} of M={m}, d={d} failed:\n{done.stderr[-4000:]}")
  result = json.loads(lines[-1][len("RESULT "):])
  result["wall_seconds"] = time.perf_counter() - start
  print(f"M={m:,} d={d} {phase}: {json.dumps(result)}", flush=True)
  return result


if __name__ == "__main__":
  app.run(main)
