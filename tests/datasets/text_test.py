"""Caption vocabulary and tokenizer: learnt offline from the benchmark's own captions, and the
same ids eagerly, in a tf.function and inside tf.data maps."""

import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tfjest import datasets
from tfjest.datasets import captions as captions_lib
from tfjest.datasets import scenes as scenes_lib
from tfjest.datasets import text

_ATTRIBUTE_WORDS = sorted(set(" ".join(datasets.COLOURS + datasets.SHAPES + datasets.SIZES +
                                       datasets.POSITIONS).split()))


def _captions(size=2000, noise=0.5):
  return sum((c["caption"] for c in datasets.generate_split("web", size=size, noise=noise)), [])


class TextTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.captions = _captions()
    cls.vocab = text.build_vocab(tf.data.Dataset.from_tensor_slices(cls.captions))
    cls.tokenizer = text.CaptionTokenizer(cls.vocab)

  def test_vocab_has_reserved_tokens_first_and_every_attribute_word(self):
    self.assertEqual(self.vocab[:2], ["[PAD]", "[UNK]"])
    self.assertContainsSubset(_ATTRIBUTE_WORDS, self.vocab)
    self.assertEqual(self.tokenizer.pad_id, 0)

  def test_vocab_from_a_built_split(self):
    config = datasets.make_config(noise=0.0, web_size=40, curated_size=200, test_size=40)
    curated = datasets.load("curated", config=config, data_dir=self.get_temp_dir())
    vocab = text.build_vocab(curated.map(lambda ex: ex["caption"]))
    self.assertContainsSubset(_ATTRIBUTE_WORDS, vocab)

  def test_clean_caption_words_are_single_known_tokens(self):
    caption = "a small red circle in the top left and a large blue bar in the center"
    expected = [self.vocab.index(word) for word in caption.split()]
    ids = self.tokenizer(caption).numpy()
    self.assertAllEqual(ids[:len(expected)], expected)
    self.assertAllEqual(ids[len(expected):], [0] * (32 - len(expected)))

  def test_eager_function_and_pipeline_agree(self):
    captions = self.captions[:50]
    eager = self.tokenizer(captions)
    traced = tf.function(self.tokenizer)(tf.constant(captions))
    dataset = tf.data.Dataset.from_tensor_slices(captions)
    mapped = dataset.map(self.tokenizer, num_parallel_calls=2)
    self.assertEqual(mapped.element_spec, tf.TensorSpec([32], tf.int32))
    batched = dataset.batch(7).map(self.tokenizer)
    self.assertEqual(eager.dtype, tf.int32)
    self.assertAllEqual(traced, eager)
    self.assertAllEqual(tf.stack(list(mapped)), eager)
    self.assertAllEqual(tf.concat(list(batched), axis=0), eager)

  def test_tokenizes_dict_examples_in_a_map_and_stacks(self):
    dataset = tf.data.Dataset.from_tensor_slices(
        {"caption": self.captions[:12], "label": np.arange(12)})
    tokens = dataset.map(lambda ex: self.tokenizer(ex["caption"])).batch(12)
    self.assertEqual(next(iter(tokens)).shape, (12, 32))

  @parameterized.parameters(((),), ((3,),), ((2, 3),))
  def test_output_shape_follows_input_shape(self, shape):
    captions = np.full(shape, "a small red circle in the center", dtype=object)
    self.assertEqual(self.tokenizer(captions).shape, shape + (32,))

  def test_truncates_and_pads(self):
    short = text.CaptionTokenizer(self.vocab, max_length=4)
    long_ids = self.tokenizer(["there is a large white cross at the center", "photo"]).numpy()
    ids = short(["there is a large white cross at the center", "photo"]).numpy()
    self.assertAllEqual(ids[0], long_ids[0, :4])
    self.assertAllEqual(ids[1], [self.vocab.index("photo"), 0, 0, 0])

  def test_longest_benchmark_captions_fit_the_default_length(self):
    scenes = scenes_lib.sample_scenes(np.random.default_rng(0), np.zeros(12, np.int64))
    scenes = scenes.replace(count=np.full(12, 3),  # three objects at two-word positions
                            position=np.tile([1, 3, 7], (12, 1)))
    template, joiner = np.repeat(np.arange(6), 2), np.tile([0, 1], 6)
    longest = captions_lib.describe(scenes, template, joiner)
    wide = text.CaptionTokenizer(self.vocab, max_length=64)
    lengths = np.sum(wide(longest).numpy() != 0, axis=1)
    self.assertLessEqual(lengths.max(), 32)

  def test_unknown_characters_map_to_unk(self):
    ids = self.tokenizer("§").numpy()
    self.assertEqual(ids[0], self.vocab.index("[UNK]"))

  def test_save_and_load_round_trip(self):
    path = tempfile.mkdtemp(dir=self.get_temp_dir()) + "/vocab.txt"
    text.save_vocab(self.vocab, path)
    loaded = text.load_vocab(path)
    self.assertEqual(loaded, self.vocab)
    self.assertAllEqual(text.CaptionTokenizer(loaded)(self.captions[:20]),
                        self.tokenizer(self.captions[:20]))

  def test_load_missing_file_raises(self):
    with self.assertRaisesRegex(FileNotFoundError, r"Received: path='/nonexistent/vocab.txt'"):
      text.load_vocab("/nonexistent/vocab.txt")

  def test_save_rejects_multiline_tokens(self):
    with self.assertRaisesRegex(ValueError, r"Received: tokens=\['a\\nb'\]"):
      text.save_vocab(["[PAD]", "a\nb"], self.get_temp_dir() + "/v.txt")

  def test_build_vocab_rejects_bad_inputs(self):
    with self.assertRaisesRegex(TypeError, r"Received: captions=\['a'\]"):
      text.build_vocab(["a"])
    dicts = tf.data.Dataset.from_tensor_slices({"caption": ["a"]})
    with self.assertRaisesRegex(TypeError, r"ex\['caption'\].*Received: captions.element_spec"):
      text.build_vocab(dicts)
    strings = tf.data.Dataset.from_tensor_slices(["a red square"])
    with self.assertRaisesRegex(ValueError, r"missing \['\[UNK\]'\]"):
      text.build_vocab(strings, reserved_tokens=["[PAD]"])
    with self.assertRaisesRegex(ValueError, r"Received: vocab_size=2"):
      text.build_vocab(strings, vocab_size=2)

  def test_tokenizer_rejects_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r"missing \['\[PAD\]'\]"):
      text.CaptionTokenizer(["[UNK]", "a"])
    with self.assertRaisesRegex(ValueError, r"Received: max_length=0"):
      text.CaptionTokenizer(self.vocab, max_length=0)


if __name__ == "__main__":
  tf.test.main()
