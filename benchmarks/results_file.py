"""The resumable results file of the data-efficiency programs (`data_efficiency`, `rela`, `dnc`).

One JSON file per study: `settings` (what decides a run's result), `runs` (one harness result
per row and seed, written as soon as it exists), `summary` (`benchmarks.report`), `machine`. A
program started again with the same settings resumes it.
"""

import datetime
import json
import os
import platform
from typing import Dict

import tensorflow as tf


def write(path: str, results: Dict):
  """Writes `results` to `path` atomically (a killed run never leaves half a file)."""
  partial = f"{path}.partial"
  with open(partial, "w") as file:
    json.dump(results, file, indent=1)
  os.replace(partial, path)


def open_or_start(path: str, settings: Dict, **empty) -> Dict:
  """The results at `path` to resume, or new ones: `{"settings", "runs", "summary", **empty}`.

  The number of seeds decides how many runs there are, not what any run gives: a file can be
  resumed with more (or fewer) seeds. Every other setting must match. Records the machine.

  Raises:
    ValueError: if the file at `path` holds results of other settings.
  """
  if os.path.exists(path):
    with open(path) as file:
      results = json.load(file)
    ours = {k: v for k, v in json.loads(json.dumps(settings)).items() if k != "seeds"}
    if {k: v for k, v in results["settings"].items() if k != "seeds"} != ours:
      raise ValueError(
          f"{path} holds results of other settings; pass another --output (or delete it). "
          f"Received: settings={settings}, file settings={results['settings']}")
    results["settings"]["seeds"] = settings["seeds"]
    print(f"resuming: {len(results['runs'])} runs already in {path}", flush=True)
  else:
    results = {"settings": settings, **empty, "runs": {}, "summary": []}
  results["machine"] = {"cpus": os.cpu_count(), "gpus": len(tf.config.list_physical_devices(
      "GPU")), "platform": platform.platform(), "tensorflow": tf.__version__,
                        "date": datetime.date.today().isoformat()}
  return results

