r"""End to end at 1 M (issue 23): a web split's reference values built on tf.data service
workers, a JEST `fit` reading them through the streamed join, and the same picks as the join by id.

    nohup python -m benchmarks.store_end_to_end > /tmp/store_e2e/log.txt 2>&1 &

The captions world (`tfjest.datasets`, `make_config(noise=0.5, web_size=--web_size)`), its web
split read from its TFDS files in their order (`examples.lib.tasks.CaptionsTask` with
`web_in_memory=False`: 3 GB of images per million would not be worth holding), in phases, each
in a fresh subprocess so that its peak resident memory (VmHWM) is its own:

- data: the TFDS build of every split (offline), then the caption vocabulary (one pass over the
  curated and web captions); seconds, examples/s, bytes on disk.
- reference: the examples' reference recipe (`examples.lib.reference.train`) on the curated split
  for `--reference_epochs` (it need not be good: the store is what is measured), or
  `--reference=<saved .keras>`; its zero-shot accuracy on `test`.
- build: `tfjest.cache_reference(reference, web, path, id_key="id", service=...)` with a
  tf.data service dispatcher and two workers, each its own process on 127.0.0.1 (started by this
  program, `--serve`): each worker takes whole input shards, reads, decodes and tokenizes their
  examples, runs the reference and writes their value shards (`tfjest/store/service.py`); the
  building process receives ids and input fingerprints only and writes the metadata. Seconds,
  examples/s, disk bytes per example, the peak RSS of the building process, and each server's
  CPU seconds during the build and peak RSS. (An input shard is one worker's: with
  `--input_shards 1` one worker stays idle; the smoke run uses 2.)
- fit: `web.apply(cache.join(id_key="id")).shuffle(...).apply(tfjest.select(learner=...,
  reference_cache=cache, id_key="id"))`, then `learner.fit(..., steps_per_epoch=--steps,
  epochs=1)`: steps/s after the first step, and the selection statistics against the
  super-batches the pipeline read. The learner is saved for the picks.
- picks_streamed, picks_in_memory: on the first `--prefix` examples of the same stream, the
  saved learner frozen (no training: scoring only), selection with the stored values joined
  streamed (`web.apply(cache.join(id_key="id")).take(prefix)`) and joined by id in memory
  (`web.take(prefix)`, not joined, given to `select(reference_cache=cache, id_key="id")`: `select`
  joins by id when the elements lack the stored features), each shuffled with the same seed and
  selected with the same seed. Every super-batch of the prefix is compared: its selected ids
  must be identical, in order. The prefix is taken after the streamed join because the join
  refuses a stream that stops before its value shards do (both sides end with a marker: a
  short stream is an error, "the stream ended before the value of id ..."); `take` after the
  join stops reading both sides. Ids and input fingerprints are checked on every example read.

Results: `--output` (JSON; resumable by phase: a phase already recorded is not run again, so a
stopped run continues where it stopped when started again with the same flags) and a printed
table. The data, the reference and the store stay in `--work_dir` for a rerun. `--smoke` runs
everything tiny (3,000 web examples, prefix 1,000, 3 steps), the phases in this process (the
servers still in their own), in well under a minute on an idle machine.
"""

import ctypes
import glob
import json
import os
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import measures
from benchmarks import results_file

_WEB = flags.DEFINE_integer("web_size", 1_000_000, "Web examples (the stream).")
_CURATED = flags.DEFINE_integer("curated_size", 4_000, "Curated examples (the reference's).")
_TEST = flags.DEFINE_integer("test_size", 2_000, "Test examples (the reference's accuracy).")
_NOISE = flags.DEFINE_float("noise", 0.5, "Share of corrupted web examples.")
_WORK = flags.DEFINE_string("work_dir", "/tmp/store_e2e", "Where the TFDS data, the reference, "
                            "the store, the learner and the picks go (kept for a rerun).")
_OUTPUT = flags.DEFINE_string("output", None, "Results file (default: benchmarks/results/"
                              "store_end_to_end/M<web_size>.json; --smoke: in --work_dir).")
_REF_EPOCHS = flags.DEFINE_integer("reference_epochs", 3, "Epochs of the reference on curated.")
_REFERENCE = flags.DEFINE_string("reference", None, "A saved reference (.keras) to use instead "
                                 "of training one.")
_INPUT_SHARDS = flags.DEFINE_integer("input_shards", 1, "Input shards of the web split (equal "
                                     "TFDS slices, one value shard each; the stream is their "
                                     "concatenation).")
_CHUNK = flags.DEFINE_integer("chunk", 1024, "Examples per reference call and stored chunk.")
_BATCH, _RATIO, _CHUNKS = measures.define_selection_flags(64, "select's batch size b.")
_SHUFFLE = flags.DEFINE_integer("shuffle_buffer", 10_000, "Shuffle buffer after the join.")
_STEPS = flags.DEFINE_integer("steps", 200, "fit steps of the learner reading the store.")
_LR = flags.DEFINE_float("learning_rate", 1e-3, "The learner's Adam learning rate.")
_PREFIX = flags.DEFINE_integer("prefix", 100_000, "Examples whose picks are compared.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the learner, the shuffle and the selection.")
_PHASES = flags.DEFINE_list("phases", None, "Phases to run (default all; recorded ones are "
                            "skipped).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Everything tiny (web 3,000 in 2 input shards, "
                           "curated and test 200, prefix 1,000, b = 16, N = 80, K = 4, 3 "
                           "steps, 1 reference epoch), "
                           "the phases in this process.")
_PHASE = flags.DEFINE_string("phase", None, "Internal: run this phase and print its JSON.")
_SERVE = flags.DEFINE_enum("serve", None, ["dispatcher", "worker"], "Internal: run a tf.data "
                           "service server until killed.")
_DISPATCHER = flags.DEFINE_string("dispatcher", None, "Internal: the dispatcher's address.")

PHASES = ("data", "reference", "build", "fit", "picks_streamed", "picks_in_memory")
_SMOKE_FLAGS = {"web_size": 3_000, "curated_size": 200, "test_size": 200, "prefix": 1_000,
                "batch_size": 16, "num_chunks": 4, "steps": 3, "reference_epochs": 1,
                "shuffle_buffer": 1_000, "chunk": 256, "input_shards": 2}
_READY = "SERVING "  # what a server prints once it serves, then its address


# Paths in --work_dir.
def _path(name):
  return os.path.join(_WORK.value, name)


def _config():
  from tfjest import datasets  # pylint: disable=g-import-not-at-top
  return datasets.make_config(noise=_NOISE.value, web_size=_WEB.value,
                              curated_size=_CURATED.value, test_size=_TEST.value)


def _task():
  from examples.lib import tasks  # pylint: disable=g-import-not-at-top
  return tasks.CaptionsTask(_config(), _path("tfds"), web_in_memory=False)


def _web(task):
  """The input shards (equal slices of the web split) and the stream: their concatenation.

  Read without TFDS' check of the example count: on a service worker ("distributed_epoch")
  each reads some of the files, and the check would stop it ("Input dataset was expected to
  contain 3000 elements but contained only 0"); the store's join checks every id instead.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  m, k = task.training_examples, _INPUT_SHARDS.value
  read = tfds.ReadConfig(assert_cardinality=False)
  splits = ["web"] if k == 1 else [f"web[{i * m // k}:{(i + 1) * m // k}]" for i in range(k)]
  shards = [task.web_pipeline(split, read_config=read) for split in splits]
  stream = shards[0]
  for shard in shards[1:]:
    stream = stream.concatenate(shard)
  return shards, stream


def _learner(task):
  """A fresh learner, as the harness makes one (seeded; Adam; built with its optimizer)."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(_SEED.value)
  learner = task.make_model("learner")
  learner.compile(optimizer=keras.optimizers.Adam(_LR.value))
  learner(task.example_inputs(1))
  learner.optimizer.build(learner.trainable_variables)
  return learner


def _selector(learner, cache):
  import tfjest  # pylint: disable=g-import-not-at-top
  return tfjest.select(learner=learner, reference_cache=cache, id_key="id",
                       batch_size=_BATCH.value, filter_ratio=_RATIO.value,
                       num_chunks=_CHUNKS.value, seed=_SEED.value)


def _disk_bytes(directory):
  return sum(os.path.getsize(f) for f in glob.glob(os.path.join(directory, "**"), recursive=True)
             if os.path.isfile(f))


def _stats(selector):
  return {k: float(v) for k, v in selector.stats.result().items()}


def run_phase(phase, recorded):
  """One phase, in this (fresh) process; returns its figures."""
  import tfjest  # pylint: disable=g-import-not-at-top
  from benchmarks import timing  # pylint: disable=g-import-not-at-top
  from examples.lib import data  # pylint: disable=g-import-not-at-top
  from examples.lib import reference as reference_lib  # pylint: disable=g-import-not-at-top
  from tfjest import datasets  # pylint: disable=g-import-not-at-top
  base = measures.peak_rss_bytes()
  out = {}
  if phase == "data":
    config = _config()
    with timing.stopwatch() as build:
      datasets.load("curated", config=config, data_dir=_path("tfds"))  # builds every split
    with timing.stopwatch() as vocab:
      tokenizer = data.tokenizer_for(config, _path("tfds"))
    directory = str(datasets.SyntheticCaptions(config=config, data_dir=_path("tfds")).data_dir)
    examples = config.web_size + config.curated_size + config.test_size
    web = glob.glob(os.path.join(directory, "*-web.tfrecord-*"))
    out = {"config": config.name, "examples": examples, "build_seconds": build.wall,
           "build_cpu_seconds": build.cpu, "build_examples_per_s": examples / build.wall,
           "vocab_seconds": vocab.wall, "vocab_cpu_seconds": vocab.cpu,
           "vocab_size": tokenizer.vocab_size, "web_files": len(web),
           "web_bytes_per_example": sum(map(os.path.getsize, web)) / config.web_size,
           "disk_bytes": _disk_bytes(directory)}
  elif phase == "reference":
    task = _task()
    with timing.stopwatch() as clock:
      if _REFERENCE.value:
        model, path = reference_lib.load(_REFERENCE.value), _REFERENCE.value
      else:
        model = reference_lib.train(task, epochs=_REF_EPOCHS.value, seed=_SEED.value, log=print)
        path = _path("reference.keras")
        reference_lib.save(model, path)
    out = {"path": path, "trained": not _REFERENCE.value, "epochs": _REF_EPOCHS.value,
           "seconds": clock.wall, **task.evaluate(model)}
  elif phase == "build":
    task = _task()
    reference = reference_lib.load(recorded["reference"]["path"])
    shards, _ = _web(task)
    with timing.stopwatch() as clock:
      cache = tfjest.cache_reference(reference, shards, _path("store"), id_key="id",
                                     batch_size=_CHUNK.value, service=_DISPATCHER.value,
                                     overwrite=True)
    m, disk = cache.num_examples, _disk_bytes(_path("store"))
    out = {"examples": m, "input_shards": cache.num_shards, "seconds": clock.wall,
           "cpu_seconds": clock.cpu, "examples_per_s": m / clock.wall, "disk_bytes": disk,
           "disk_bytes_per_example": disk / m, "service": _DISPATCHER.value}
  elif phase == "fit":
    task = _task()
    cache = tfjest.ReferenceCache.load(_path("store"))
    learner = _learner(task)
    selector = _selector(learner, cache)
    counter = data.CorruptionCounter()
    _, web = _web(task)
    stream = (web.apply(cache.join(id_key="id")).shuffle(_SHUFFLE.value, seed=_SEED.value)
              .apply(selector).map(data.strip_meta(counter)))
    timer = timing.StepTimer(warmup=1)
    with timing.stopwatch() as clock:
      learner.fit(stream, steps_per_epoch=_STEPS.value, epochs=1, verbose=0, shuffle=False,
                  callbacks=[timer])
    reference_lib.save(learner, _path("learner.keras"))
    steps = timer.timings.walls
    stats = _stats(selector)
    n = selector.super_batch_size
    out = {"steps": _STEPS.value, "super_batch_size": n, "seconds": clock.wall,
           "cpu_seconds": clock.cpu, "first_step_seconds": clock.wall - sum(steps),
           "steps_per_s": len(steps) / sum(steps), "examples_read_per_s": n * len(steps) /
           sum(steps), "median_step_ms": 1e3 * timer.timings.wall,
           "median_step_cpu_ms": 1e3 * timer.timings.cpu, "stats": stats,
           "read_is_n_per_batch": stats["read"] == n * stats["batches"],
           "selected_is_b_per_batch": stats["selected"] == _BATCH.value * stats["batches"],
           "corrupted_share": counter.result()["corrupted_share"]}
  elif phase in ("picks_streamed", "picks_in_memory"):
    task = _task()
    cache = tfjest.ReferenceCache.load(_path("store"))
    learner = (reference_lib.load(_path("learner.keras")) if "fit" in recorded
               else _learner(task))  # frozen: scoring only
    selector = _selector(learner, cache)
    _, web = _web(task)
    if phase == "picks_streamed":
      stream = web.apply(cache.join(id_key="id")).take(_PREFIX.value)
    else:
      stream = web.take(_PREFIX.value)
    with timing.stopwatch() as setup:  # the join by id reads the whole store here
      stream = stream.shuffle(_SHUFFLE.value, seed=_SEED.value).apply(selector)
    with timing.stopwatch() as clock:
      picks = np.stack([meta["id"].numpy() for _, meta in stream])
    np.save(_path(f"{phase}.npy"), picks)
    stats = _stats(selector)
    out = {"super_batches": len(picks), "setup_seconds": setup.wall, "seconds": clock.wall,
           "cpu_seconds": clock.cpu, "examples_per_s": stats["read"] / clock.wall,
           "learner": "fit's, frozen" if "fit" in recorded else "fresh", "stats": stats}
  else:
    raise ValueError(f"Expected a phase in {PHASES}. Received: phase={phase!r}")
  out.update({"base_rss_bytes": base, "peak_rss_bytes": measures.peak_rss_bytes()})
  return out


def compare_picks():
  """The two joins' picks, super-batch by super-batch (NumPy only)."""
  streamed, by_id = (np.load(_path(f"picks_{k}.npy")) for k in ("streamed", "in_memory"))
  if streamed.shape != by_id.shape:
    return {"identical": False, "super_batches": [len(streamed), len(by_id)],
            "reason": f"shapes {streamed.shape} and {by_id.shape}"}
  same = (streamed == by_id).all(axis=1)
  return {"identical": bool(same.all()), "super_batches": len(same),
          "identical_super_batches": int(same.sum()), "examples_selected": int(streamed.size),
          "distinct_ids": int(len(np.unique(streamed))),
          "first_difference": None if same.all() else int(np.argmin(same))}


# The servers: a dispatcher and two workers, each a process of this program (`--serve`).
def serve():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfjest.datasets import text  # pylint: disable=g-import-not-at-top,unused-import
  # (The tokenizer's TensorFlow Text ops must be registered where the pipeline runs.)
  service = tf.data.experimental.service
  if _SERVE.value == "dispatcher":
    server = service.DispatchServer(service.DispatcherConfig(port=0))
    address = server.target
  else:
    server = service.WorkerServer(service.WorkerConfig(
        dispatcher_address=_DISPATCHER.value, worker_address="127.0.0.1:%port%"))
    address = _DISPATCHER.value
  print(_READY + address, flush=True)
  server.join()


def _start(name, dispatcher=None):
  """Starts a server process: the dispatcher, or a worker of `dispatcher`; logs to `name`.log."""
  role = "worker" if dispatcher else "dispatcher"
  command = [sys.executable, "-m", "benchmarks.store_end_to_end", f"--serve={role}"]
  if dispatcher:
    command.append(f"--dispatcher={dispatcher}")
  log = open(_path(f"{name}.log"), "w")
  # The server ends when this program ends, even killed (a test's timeout): PR_SET_PDEATHSIG,
  # looked up here, so that the forked child only calls it (no loader lock after the fork).
  prctl = ctypes.CDLL(None).prctl
  return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                          preexec_fn=lambda: prctl(1, signal.SIGTERM))


def _ready(process):
  for line in process.stdout:
    if line.startswith(_READY):
      return line[len(_READY):].strip()
  raise RuntimeError(f"A tf.data service server (pid {process.pid}) stopped before serving: "
                     f"see its log in {_WORK.value}")


def _process_figures(pid):
  """CPU seconds and peak RSS of a running process of ours (from /proc)."""
  with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
  with open(f"/proc/{pid}/status") as f:
    rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
  return {"cpu_seconds": cpu, "peak_rss_bytes": rss}


def _with_servers(run):
  """Runs `run(dispatcher address)` with a dispatcher and two workers; adds their figures: CPU
  seconds while it ran (the imports before it left out) and peak RSS."""
  servers = [_start("dispatcher")]
  try:
    target = _ready(servers[0])
    address = target.split("://")[-1]
    servers += [_start(f"worker{i}", address) for i in range(2)]
    for worker in servers[1:]:
      _ready(worker)
    names = ("dispatcher", "worker 0", "worker 1")
    started = [_process_figures(p.pid)["cpu_seconds"] for p in servers]  # their imports
    result = run(target)
    result["servers"] = {}
    for name, process, before in zip(names, servers, started):
      figures = _process_figures(process.pid)
      result["servers"][name] = {"cpu_seconds": figures["cpu_seconds"] - before,
                                 "start_cpu_seconds": before,
                                 "peak_rss_bytes": figures["peak_rss_bytes"]}
    return result
  finally:
    for process in servers:  # only the processes started here
      process.send_signal(signal.SIGTERM)
      process.wait()


def _phase(phase, results):
  """Runs `phase` (in a fresh process, but with --smoke) and returns its figures."""
  recorded = results["phases"]

  def run(dispatcher=None):
    if dispatcher:
      flags.FLAGS.dispatcher = dispatcher
    if _SMOKE.value:  # in this process: seconds, but no peak RSS of its own
      return run_phase(phase, recorded)
    command = [sys.executable, "-m", "benchmarks.store_end_to_end", f"--phase={phase}",
               f"--flagfile={_path('flags.txt')}"] + (
                   [f"--dispatcher={dispatcher}"] if dispatcher else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if done.returncode or not lines:
      raise RuntimeError(f"Phase {phase} failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])

  start = time.perf_counter()
  result = _with_servers(run) if phase == "build" else run()
  result["wall_seconds"] = time.perf_counter() - start
  result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
  print(f"{phase}: {json.dumps(result)}", flush=True)
  return result


def _settings():
  names = ("web_size", "curated_size", "test_size", "noise", "reference_epochs", "reference",
           "input_shards", "chunk", "batch_size", "filter_ratio", "num_chunks",
           "shuffle_buffer", "steps", "learning_rate", "prefix", "seed", "smoke")
  return {name: flags.FLAGS[name].value for name in names}


def _open(path, settings):
  """The results at `path` to resume (the same settings), or new ones."""
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
    if results["settings"] != settings:
      raise ValueError(f"{path} holds results of other settings; pass another --output (or "
                       f"delete it). Received: settings={settings}, file settings="
                       f"{results['settings']}")
    return results
  return {"settings": settings, "phases": {}}


def _machine():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with open("/proc/meminfo") as f:
    memory = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemTotal:"))
  return {"cpus": os.cpu_count(), "memory_bytes": memory, "gpus": len(
      tf.config.list_physical_devices("GPU")), "tensorflow": tf.__version__}


def _gb(value):
  return "-" if value is None else f"{value / 1e9:.2f}"


def table(results):
  """The printed table of the recorded phases."""
  p = results["phases"]
  rows = []
  if "data" in p:
    d = p["data"]
    took = (f"{d['build_seconds']:.0f} s build ({d['build_examples_per_s']:,.0f} ex/s), "
            f"{d['vocab_seconds']:.0f} s vocab")
    what = (f"{d['examples']:,} examples, {d['web_bytes_per_example']:,.0f} B/web ex, "
            f"{d['web_files']} web files")
    rows.append(("data", took, what, d["peak_rss_bytes"]))
  if "reference" in p:
    r = p["reference"]
    rows.append(("reference", f"{r['seconds']:.0f} s", f"{r['epochs']} epochs, zero-shot "
                 f"accuracy {r['accuracy']:.3f}", r["peak_rss_bytes"]))
  if "build" in p:
    b = p["build"]
    servers = ", ".join(f"{k} {v['cpu_seconds']:.0f} s CPU, {_gb(v['peak_rss_bytes'])} GB"
                        for k, v in b.get("servers", {}).items())
    rows.append(("build (service)", f"{b['seconds']:.0f} s ({b['examples_per_s']:,.0f} ex/s; "
                 f"client {b['cpu_seconds']:.0f} s CPU)", f"{b['examples']:,} examples, "
                 f"{b['disk_bytes_per_example']:.0f} B/ex on disk; {servers}",
                 b["peak_rss_bytes"]))
  if "fit" in p:
    f = p["fit"]
    s = f["stats"]
    rows.append(("fit (streamed join)", f"{f['steps_per_s']:.2f} steps/s "
                 f"({f['examples_read_per_s']:,.0f} ex read/s), first step "
                 f"{f['first_step_seconds']:.1f} s", f"{f['steps']} steps of b={_BATCH.value} "
                 f"of N={f['super_batch_size']}; stats: {s['batches']:.0f} batches, read "
                 f"{s['read']:,.0f}, selected {s['selected']:,.0f}; corrupted selected "
                 f"{f['corrupted_share']:.2f}", f["peak_rss_bytes"]))
  for kind in ("streamed", "in_memory"):
    if f"picks_{kind}" in p:
      k = p[f"picks_{kind}"]
      rows.append((f"picks ({kind.replace('_', ' ')})", f"{k['seconds']:.0f} s "
                   f"({k['examples_per_s']:,.0f} ex/s), setup {k['setup_seconds']:.1f} s",
                   f"{k['super_batches']} super-batches, read {k['stats']['read']:,.0f}",
                   k["peak_rss_bytes"]))
  if "same_picks" in results:
    c = results["same_picks"]
    rows.append(("same picks", "identical" if c["identical"] else "DIFFERENT",
                 f"{c.get('identical_super_batches', 0)} of {c['super_batches']} super-batches "
                 f"identical ({c.get('examples_selected', 0):,} selected ids)", None))
  lines = ["| phase | time | figures | peak RSS GB |", "|---|---|---|---|"]
  lines += [f"| {a} | {b} | {c} | {_gb(d)} |" for a, b, c, d in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  if _SERVE.value:
    serve()
    return
  if _SMOKE.value:
    for name, value in _SMOKE_FLAGS.items():
      flags.FLAGS[name].value = value
  os.makedirs(_WORK.value, exist_ok=True)
  if _PHASE.value:
    results = _open(_output(), _settings())
    print("RESULT " + json.dumps(run_phase(_PHASE.value, results["phases"])), flush=True)
    return
  if _PREFIX.value > _WEB.value:
    raise ValueError(f"The prefix must be within the web split ({_WEB.value:,} examples). "
                     f"Received: prefix={_PREFIX.value}")
  # The phases' processes read this run's flags from a file.
  flags.FLAGS.append_flags_into_file(_path("flags.txt"))
  output = _output()
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  results = _open(output, _settings())
  results["machine"] = _machine()
  for phase in PHASES:
    if phase in results["phases"] or (_PHASES.value and phase not in _PHASES.value):
      continue
    results["phases"][phase] = _phase(phase, results)
    if not phase.startswith("picks"):  # what later phases read changed: they run again
      for later in PHASES[PHASES.index(phase) + 1:]:
        results["phases"].pop(later, None)
    results.pop("same_picks", None)
    results_file.write(output, results)
  if "picks_in_memory" in results["phases"] and "same_picks" not in results:
    results["same_picks"] = compare_picks()
    results_file.write(output, results)
  print(table(results), flush=True)
  print(f"results: {output}", flush=True)


def _output():
  if _OUTPUT.value:
    return _OUTPUT.value
  if _SMOKE.value:
    return _path("smoke.json")
  return os.path.join("benchmarks", "results", "store_end_to_end", f"M{_WEB.value}.json")


if __name__ == "__main__":
  app.run(main)
