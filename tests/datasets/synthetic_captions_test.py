"""The synthetic captions benchmark: its TFDS builder, the splits it draws, and `load`.

Statistical claims are exact by construction (corruption counts are allocated, not sampled),
so their tolerances are rounding (one example per corruption type); the one sampled quantity,
the web split's class frequencies, is checked within 4 binomial standard deviations.
"""

import inspect
import socket
import tempfile
from unittest import mock

from absl.testing import parameterized
from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfjest import datasets
from tfjest.datasets import noise as noise_lib
from tfjest.datasets import png
from tfjest.datasets import scenes as scenes_lib
from tfjest.datasets import splits as splits_lib

_TINY = datasets.make_config(noise=0.5, web_size=300, curated_size=80, test_size=40)
_ATTRIBUTE_WORDS = set(" ".join(datasets.COLOURS + datasets.SHAPES + datasets.SIZES +
                                datasets.POSITIONS).split())


class SyntheticCaptionsBuilderTest(tfds.testing.DatasetBuilderTestCase):
  """TFDS' declarative checks (registration, info, build, read back, split sizes, reload)."""

  DATASET_CLASS = datasets.SyntheticCaptions
  BUILDER_CONFIG_NAMES_TO_TEST = [_TINY]
  SPLITS = {"curated": 80, "web": 300, "test": 40}
  # Nothing to fake: the builder downloads nothing, but TFDS wants an existing directory.
  EXAMPLE_DIR = tempfile.gettempdir()


def _generate(split, size, **kwargs):
  """One split from `generate_split`, its chunks joined."""
  chunks = list(datasets.generate_split(split, size=size, **kwargs))
  return {key: (sum((c[key] for c in chunks), []) if key == "caption" else
                np.concatenate([c[key] for c in chunks])) for key in chunks[0]}


def _records(data_dir, config):
  """Name -> bytes of every TFRecord file of a built config."""
  paths = epath.Path(data_dir).glob(f"synthetic_captions/{config.name}/*/*.tfrecord*")
  return {path.name: path.read_bytes() for path in paths}


class SplitsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(0.0, 0.3, 0.5, 0.7)
  def test_corruption_shares_match_noise_level(self, noise):
    size = 2000
    counts = np.bincount(_generate("web", size, noise=noise)["corruption"],
                         minlength=len(datasets.CORRUPTIONS))
    # Tolerance: rounding only, 1/size for the total and one example per type.
    self.assertAllClose(1 - counts[0] / size, noise, atol=1 / size)
    for name, weight in datasets.NOISE_MIXTURE.items():
      self.assertAllClose(counts[datasets.CORRUPTIONS.index(name)], noise * weight * size,
                          atol=1.0, msg=name)

  def test_each_corruption_is_what_it_says(self):
    size, noise = 2000, 0.7
    plan = splits_lib._plan("web", size, noise, 0, 1.0)
    web = _generate("web", size, noise=noise)
    np.testing.assert_array_equal(web["corruption"], plan.corruption)
    caption, clean = np.array(web["caption"]), np.array(plan.clean_caption)
    kind = {name: web["corruption"] == code for code, name in enumerate(datasets.CORRUPTIONS)}
    drawn = scenes_lib.render(plan.scenes, 32).astype(int)
    distance = np.abs(web["image"].astype(int) - drawn).max(axis=(1, 2, 3))

    with self.subTest("none"):
      np.testing.assert_array_equal(caption[kind["none"]], clean[kind["none"]])
      np.testing.assert_array_equal(web["label"][kind["none"]], web["true_label"][kind["none"]])
      np.testing.assert_array_equal(distance[kind["none"]], 0)
    with self.subTest("swapped: another image's caption, another label"):
      self.assertTrue(np.all(caption[kind["swapped"]] != clean[kind["swapped"]]))
      self.assertContainsSubset(set(caption[kind["swapped"]]), set(clean[~kind["clutter"]]))
      self.assertTrue(np.all(web["label"][kind["swapped"]] !=
                             web["true_label"][kind["swapped"]]))
    with self.subTest("wrong_attribute: same objects, some attribute wrong"):
      wrong = kind["wrong_attribute"]
      self.assertTrue(np.all(caption[wrong] != clean[wrong]))
      changed_label = web["label"][wrong] != web["true_label"][wrong]
      self.assertBetween(changed_label.mean(), 0.5, 0.85)  # colour or shape among 1-2 of 4
    with self.subTest("uninformative: no attribute words"):
      for text in caption[kind["uninformative"]]:
        self.assertEmpty(set(text.lower().split()) & _ATTRIBUTE_WORDS, msg=text)
    with self.subTest("clutter: the described scene is not drawn"):
      np.testing.assert_array_equal(web["true_label"][kind["clutter"]], -1)
      np.testing.assert_array_equal(caption[kind["clutter"]], clean[kind["clutter"]])
      self.assertGreater(distance[kind["clutter"]].min(), 50)
    with self.subTest("near_duplicate: a clean example, jittered"):
      self.assertBetween(distance[kind["near_duplicate"]].min(), 1, 3)
      self.assertLessEqual(distance[kind["near_duplicate"]].max(), 3)
      clean_images = {}
      for text, image in zip(caption[kind["none"]], web["image"][kind["none"]]):
        clean_images.setdefault(text, []).append(image.astype(int))
      for text, image in zip(caption[kind["near_duplicate"]],
                             web["image"][kind["near_duplicate"]]):
        closest = min(np.abs(image - source).max() for source in clean_images[text])
        self.assertLessEqual(closest, 3)

  @parameterized.parameters(("curated", 400), ("test", 400), ("curated", 90))
  def test_curated_and_test_are_clean_and_balanced(self, split, size):
    data = _generate(split, size, noise=0.7)  # the noise level applies to web only
    np.testing.assert_array_equal(data["corruption"], 0)
    np.testing.assert_array_equal(data["label"], data["true_label"])
    counts = np.bincount(data["label"], minlength=datasets.NUM_CLASSES)
    self.assertLessEqual(counts.max() - counts.min(), 1)

  def test_web_classes_are_long_tailed(self):
    size = 4000
    probs = datasets.web_class_probs(seed=0, zipf_exponent=1.0)
    self.assertAllClose(probs.max() / probs.min(), datasets.NUM_CLASSES)  # Zipf, s = 1
    freq = np.bincount(_generate("web", size, noise=0.0)["label"],
                       minlength=datasets.NUM_CLASSES) / size
    self.assertAllLessEqual(np.abs(freq - probs) - 4 * np.sqrt(probs * (1 - probs) / size), 0)

  @parameterized.parameters("curated", "web", "test")
  def test_ids_are_unique_and_ordered(self, split):
    np.testing.assert_array_equal(_generate(split, 1100, noise=0.5)["id"], np.arange(1100))

  def test_splits_are_independent_draws(self):
    curated, test = _generate("curated", 200), _generate("test", 200)
    self.assertEmpty({image.tobytes() for image in curated["image"]} &
                     {image.tobytes() for image in test["image"]})

  def test_same_seed_same_arrays_other_seed_other_arrays(self):
    first, again = _generate("web", 600, noise=0.5), _generate("web", 600, noise=0.5)
    other = _generate("web", 600, noise=0.5, seed=1)
    for key in first:
      np.testing.assert_array_equal(first[key], again[key])
    self.assertNotAllEqual(first["image"], other["image"])

  def test_bad_arguments_raise(self):
    with self.assertRaisesRegex(ValueError, r"Unknown split.*Received: split='train'"):
      next(datasets.generate_split("train", size=10))
    with self.assertRaisesRegex(ValueError, r"Received: size=-5"):
      next(datasets.generate_split("web", size=-5))


class RenderTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(24, 32, 48, 64, 96)
  def test_objects_of_different_cells_never_overlap(self, image_size):
    masks = scenes_lib._mask_bank(image_size)
    self.assertFalse(scenes_lib._cells_overlap(masks))
    pixels = masks.sum(axis=(-1, -2))
    self.assertAllGreater(pixels, 0)
    self.assertTrue(np.all(pixels[:, 1] > pixels[:, 0]))  # large is larger than small

  def test_main_object_is_drawn_in_its_cell(self):
    image_size = 32
    scenes = scenes_lib.sample_scenes(np.random.default_rng(0), np.arange(datasets.NUM_CLASSES))
    alone = scenes.replace(count=np.ones_like(scenes.count))
    empty = scenes.replace(count=np.zeros_like(scenes.count))
    changed = np.any(scenes_lib.render(alone, image_size) !=
                     scenes_lib.render(empty, image_size), axis=-1)
    cell = image_size / 3
    for i in range(len(scenes)):
      rows, cols = np.nonzero(changed[i])
      self.assertNotEmpty(rows)
      row, col = divmod(int(scenes.position[i, 0]), 3)
      # The object's centre of mass is in its grid cell ("top left" is at the top left).
      self.assertEqual((rows.mean() // cell, cols.mean() // cell), (row, col),
                       msg=datasets.POSITIONS[scenes.position[i, 0]])

  @parameterized.parameters(1, 2, 3, 4)
  def test_png_round_trips(self, channels):
    image = np.random.default_rng(channels).integers(0, 256, (7, 5, channels), dtype=np.uint8)
    self.assertAllEqual(tf.io.decode_png(png.encode_png(image)), image)

  @parameterized.parameters(
      (np.zeros((4, 4, 3), np.float32), r"Received: image.dtype=float32"),
      (np.zeros((4, 4), np.uint8), r"Received: image.dtype=uint8, image.shape=\(4, 4\)"),
      (np.zeros((4, 4, 5), np.uint8), r"image.shape=\(4, 4, 5\)"))
  def test_png_rejects_bad_images(self, image, message):
    with self.assertRaisesRegex(ValueError, message):
      png.encode_png(image)

  def test_png_rejects_bad_compression(self):
    with self.assertRaisesRegex(ValueError, r"Received: compression=10"):
      png.encode_png(np.zeros((2, 2, 3), np.uint8), compression=10)


class ConfigAndLoadTest(tf.test.TestCase, parameterized.TestCase):

  def test_all_lists_exactly_the_public_names(self):
    public = {name for name, value in vars(datasets).items()
              if not name.startswith("_") and not inspect.ismodule(value)}
    self.assertCountEqual(datasets.__all__, public)

  def test_registered_configs(self):
    names = [c.name for c in datasets.SyntheticCaptions.BUILDER_CONFIGS]
    self.assertEqual(names, ["noise_0.0", "noise_0.3", "noise_0.5", "noise_0.7"])
    self.assertEqual(datasets.SyntheticCaptions.DEFAULT_CONFIG_NAME, "noise_0.5")
    self.assertIs(datasets.make_config(noise=0.3), datasets.SyntheticCaptions.BUILDER_CONFIGS[1])
    self.assertEqual(datasets.make_config(noise=0.5, web_size=1000, seed=2).name,
                     "noise_0.5-web1000-seed2")

  @parameterized.named_parameters(
      ("noise", {"noise": 1.5}, r"Received: noise=1.5"),
      ("web_size", {"web_size": 0}, r"Received: web_size=0"),
      ("curated_size", {"curated_size": 2.5}, r"Received: curated_size=2.5"),
      ("image_size", {"image_size": 16}, r"at least 24. Received: image_size=16"),
      ("seed", {"seed": -1}, r"Received: seed=-1"),
      ("zipf", {"zipf_exponent": -1.0}, r"Received: zipf_exponent=-1.0"))
  def test_make_config_rejects_bad_values(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      datasets.make_config(**kwargs)

  def test_corruption_counts_rejects_bad_values(self):
    with self.assertRaisesRegex(ValueError, r"Received: noise=-0.1"):
      datasets.corruption_counts(10, -0.1)
    with self.assertRaisesRegex(ValueError, r"Received: size=-1"):
      datasets.corruption_counts(-1, 0.5)

  def test_load_rejects_unknown_split(self):
    with self.assertRaisesRegex(ValueError, r"Unknown split.*Received: split='train'"):
      datasets.load("train", data_dir=self.get_temp_dir())

  def test_load_rejects_unknown_config(self):
    with self.assertRaisesRegex(ValueError,
                                r"Unknown config.*make_config.*Received: config='noise_0.9'"):
      datasets.load("web", config="noise_0.9", data_dir=self.get_temp_dir())
    with self.assertRaisesRegex(TypeError, r"Received: config=0.5 of type float"):
      datasets.load("web", config=0.5, data_dir=self.get_temp_dir())

  def test_builds_and_loads_without_network(self):
    config = datasets.make_config(noise=0.5, web_size=200, curated_size=40, test_size=40)

    def no_network(*args, **kwargs):
      raise AssertionError(f"network access attempted: {args} {kwargs}")

    with mock.patch.object(socket.socket, "connect", no_network), \
        mock.patch.object(socket, "create_connection", no_network), \
        mock.patch.object(socket, "getaddrinfo", no_network):
      web = list(datasets.load("web", config=config, data_dir=self.get_temp_dir())
                 .as_numpy_iterator())
    self.assertLen(web, 200)
    self.assertCountEqual([ex["id"] for ex in web], range(200))
    counts = np.bincount([ex["corruption"] for ex in web], minlength=len(datasets.CORRUPTIONS))
    expected = datasets.corruption_counts(200, 0.5)
    self.assertEqual(counts.tolist(), [expected[name] for name in datasets.CORRUPTIONS])
    self.assertEqual(web[0]["image"].shape, (32, 32, 3))
    self.assertEqual(web[0]["image"].dtype, np.uint8)

  def test_same_seed_same_bytes(self):
    config = datasets.make_config(noise=0.5, web_size=200, curated_size=40, test_size=40)
    other = datasets.make_config(noise=0.5, web_size=200, curated_size=40, test_size=40, seed=1)
    first, second = (tempfile.mkdtemp(dir=self.get_temp_dir()) for _ in range(2))
    for data_dir, cfg in ((first, config), (second, config), (first, other)):
      datasets.SyntheticCaptions(config=cfg, data_dir=data_dir).download_and_prepare()
    records = _records(first, config)
    self.assertLen(records, 3)
    self.assertEqual(records, _records(second, config))
    self.assertNotEqual(records["synthetic_captions-web.tfrecord-00000-of-00001"],
                        _records(first, other)["synthetic_captions-web.tfrecord-00000-of-00001"])

  def test_load_as_supervised_slices(self):
    config = datasets.make_config(noise=0.0, web_size=60, curated_size=40, test_size=40)
    test = datasets.load("test[:10]", config=config, data_dir=self.get_temp_dir(),
                         as_supervised=True)
    images, labels = next(iter(test.batch(10)))
    self.assertEqual(images.shape, (10, 32, 32, 3))
    self.assertEqual(labels.dtype, tf.int64)


if __name__ == "__main__":
  tfds.testing.test_main()
