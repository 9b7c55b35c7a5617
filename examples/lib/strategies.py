"""The `tf.distribute` strategy a program runs under, by name (the programs' `--strategy`)."""

import os
import socket
from typing import Optional
from urllib import parse

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def _tpu_strategy(address: str) -> tf.distribute.Strategy:
  if not address:
    raise ValueError("--strategy=tpu needs the TPU's address: --tpu=<name> (Cloud TPU), "
                     "--tpu=grpc://<host>:<port>, or --tpu=local on a TPU VM. Received: tpu=''")
  remedy = ("Run on a Cloud TPU VM (--tpu=local) or pass a reachable TPU (--tpu=<name> or "
            "--tpu=grpc://<host>:8470); use --strategy=mirrored to try replicas on this machine.")
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    master = resolver.master()
    url = parse.urlparse(master)
    if url.scheme == "grpc":
      # Connecting to an address where nothing listens blocks for minutes: check it first.
      with socket.create_connection((url.hostname, url.port), timeout=5):
        pass
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(f"No TPU found at the address given. {remedy} Received: tpu={address!r} "
                       f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})") from e
  return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str, *, tpu: str = "") -> Optional[tf.distribute.Strategy]:
  """The strategy named by `--strategy` (None for "default").

  "mirrored" uses every GPU, or every logical CPU when there is no GPU (see
  `tfjest.testing.configure_cpu_devices`); "multi_worker" reads the cluster from `TF_CONFIG`; "tpu" resolves
  `tpu` with `TPUClusterResolver`.

  Raises:
    ValueError: on an unknown name, or a missing `TF_CONFIG` / `tpu` address.
    RuntimeError: if no TPU is reachable at `tpu`.
  """
  if name not in STRATEGIES:
    raise ValueError(f"Expected strategy in {STRATEGIES}. Received: strategy={name!r}")
  if name == "default":
    return None
  if name == "mirrored":
    devices = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  if name == "multi_worker":
    if not os.environ.get("TF_CONFIG"):
      raise ValueError("--strategy=multi_worker reads the cluster and this worker's index from "
                       "the TF_CONFIG environment variable, which is not set. "
                       "Received: TF_CONFIG=''")
    return tf.distribute.MultiWorkerMirroredStrategy()
  return _tpu_strategy(tpu)
