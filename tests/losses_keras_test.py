"""tfjest's per-example loss is the loss `fit` optimises, for every loss `keras.losses` offers.

The oracle is Keras itself: the per-example loss of example `i` is
`model.compute_loss(x=None, y=y[i:i+1], y_pred=y_pred[i:i+1])` of a model compiled with the
loss, i.e. the loss of that example alone on a batch of one. The losses are enumerated from
`keras.losses` (every exported `Loss` subclass, every exported loss function and their names),
so a loss added to Keras is tested without editing this file.
"""

import inspect

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tfjest
from tfjest import adapters

N, C, T, L = 4, 3, 6, 2  # examples, classes, time steps, CTC label length

# Losses that cannot be a per-example compiled loss at all, with the reason.
EXCLUDED = {
    # Circle is a metric-learning loss over pairs: an example's loss is computed against the
    # other examples of its batch (its positives and negatives), so no loss belongs to one
    # example. On a batch of one it has no pairs and is 0. tfjest refuses it
    # (test_circle_is_refused).
    "circle",
}

# Single forms of a loss that `compile` rejects, with the reason. `test_exclusions_still_hold`
# fails once a Keras release lifts the reason, so an entry cannot outlive it.
FORM_EXCLUDED = {
    # Not registered under `keras.losses.get` (Keras 3.15), so `compile(loss=name)` raises.
    ("name", "CategoricalGeneralizedCrossEntropy"): "unregistered",
    ("name", "categorical_generalized_cross_entropy"): "unregistered",
    # `q` has no default, so the function cannot be called as `fn(y_true, y_pred)`.
    ("function", "categorical_generalized_cross_entropy"): "needs_q",
}


def _exported():
  """`(form, name, loss)` for every loss `keras.losses` exports, in each form compile takes."""
  forms = []
  for name in sorted(dir(keras.losses)):
    obj = getattr(keras.losses, name)
    if inspect.isclass(obj) and issubclass(obj, keras.losses.Loss) and obj is not keras.losses.Loss:
      forms.append(("object", name, obj))
      forms.append(("name", name, name))
    elif (inspect.isfunction(obj) and
          list(inspect.signature(obj).parameters)[:2] == ["y_true", "y_pred"]):
      forms.append(("function", name, obj))
      forms.append(("name", name, name))
  return forms


def _key(form, loss):
  """The loss function behind a form: what decides the labels and predictions it is meant for."""
  if form == "name":
    try:
      loss = keras.losses.get(loss)
    except ValueError:
      return loss
  if form == "object":
    loss = loss()
  fn = getattr(loss, "fn", loss)
  return getattr(fn, "__name__", type(loss).__name__)


# Label and prediction shapes (after the batch axis) each loss is meant for: `(kind, y, y_pred)`,
# with both label ranks wherever `fit` accepts them. A loss not listed gets `_COLUMN + _VECTOR`.
_COLUMN = [("prob", (), (1,)), ("prob", (1,), (1,))]
_VECTOR = [("prob", (C,), (C,))]
_STEPS = [("prob", (T,), (T, 1)), ("prob", (T, 1), (T, 1)), ("prob", (T, C), (T, C))]
_REGRESSION = _COLUMN + _VECTOR + _STEPS
_BINARY = [("binary", (), (1,)), ("binary", (1,), (1,)), ("binary", (C,), (C,)),
           ("binary", (T,), (T, 1)), ("binary", (T, 1), (T, 1))]
_ONE_HOT = [("one_hot", (C,), (C,)), ("one_hot", (T, C), (T, C))]
_SPARSE = [("sparse", (), (C,)), ("sparse", (1,), (C,)), ("sparse", (T,), (T, C))]


def _positive(variants):
  return [("positive", y, p) for _, y, p in variants]


SPECS = {
    "mean_squared_error": _REGRESSION,
    "mean_absolute_error": _REGRESSION,
    "huber": _REGRESSION,
    "log_cosh": _REGRESSION,
    "mean_absolute_percentage_error": _positive(_REGRESSION),
    "mean_squared_logarithmic_error": _positive(_REGRESSION),
    "poisson": _positive(_REGRESSION),
    "cosine_similarity": [("signed", y, p) for _, y, p in _REGRESSION],
    "kl_divergence": _COLUMN + _ONE_HOT,
    "hinge": _BINARY,
    "squared_hinge": _BINARY,
    "binary_crossentropy": _BINARY,
    "binary_focal_crossentropy": _BINARY,
    "categorical_hinge": _COLUMN + _ONE_HOT,
    "categorical_crossentropy": _ONE_HOT,
    "categorical_focal_crossentropy": _ONE_HOT,
    "sparse_categorical_crossentropy": _SPARSE,
    # Its labels are class ids `[N]`. Not `[N, 1]`: Keras one-hot encodes them to `[N, 1, C]`,
    # which broadcasts against `[N, C]` to `[N, N, C]` inside `fit` itself.
    "categorical_generalized_cross_entropy": [("sparse", (), (C,)), ("sparse", (T,), (T, C))],
    "ctc": [("ctc", (L,), (T, C))],
    # With the default `axis=None` these reduce over the whole batch; per example means the
    # loss of a batch of one.
    "dice": _BINARY + [("binary", (4, 4, 1), (4, 4, 1))],
    "tversky": _BINARY + [("binary", (4, 4, 1), (4, 4, 1))],
}


def _data(kind, y_shape, p_shape, seed):
  """Labels and predictions of `N` examples, of the values `kind` names."""
  rng = np.random.default_rng(seed)
  y_shape, p_shape = (N,) + tuple(y_shape), (N,) + tuple(p_shape)
  uniform = lambda shape, lo=0.05, hi=0.95: rng.uniform(lo, hi, shape).astype(np.float32)
  if kind == "prob":
    return uniform(y_shape), uniform(p_shape)
  if kind == "positive":
    return uniform(y_shape, 0.5, 3.0), uniform(p_shape, 0.5, 3.0)
  if kind == "signed":
    return (rng.normal(size=y_shape).astype(np.float32),
            rng.normal(size=p_shape).astype(np.float32))
  if kind == "binary":
    y = (np.arange(np.prod(y_shape)).reshape(y_shape) + rng.integers(0, 2, y_shape)) % 2
    return y.astype(np.float32), uniform(p_shape)
  logits = rng.normal(size=p_shape).astype(np.float32)
  probs = tf.nn.softmax(logits).numpy()
  if kind == "one_hot":
    return np.eye(p_shape[-1], dtype=np.float32)[rng.integers(0, p_shape[-1], y_shape[:-1])], probs
  if kind == "sparse":
    return rng.integers(0, p_shape[-1], y_shape).astype(np.int32), probs
  if kind == "ctc":  # class 0 is CTC's blank: labels are 1..C-1, the last one of half padded
    y = rng.integers(1, p_shape[-1], y_shape).astype(np.int32)
    y[::2, -1] = 0
    return y, logits
  raise ValueError(f"Unknown kind {kind!r}")


def _cases():
  cases = []
  for form, name, loss in _exported():
    key = _key(form, loss)
    if key in EXCLUDED or (form, name) in FORM_EXCLUDED:
      continue
    for kind, y_shape, p_shape in SPECS.get(key, _COLUMN + _VECTOR):
      shapes = "x".join(map(str, y_shape)) or "n"
      cases.append(dict(
          testcase_name=f"_{form}_{name}_{kind}_y{shapes}_p{'x'.join(map(str, p_shape))}",
          form=form, loss=loss, kind=kind, y_shape=y_shape, p_shape=p_shape))
  return cases


def _compiled(loss, p_shape, name="identity"):
  """A model whose outputs are its inputs, compiled with `loss`: its compute_loss is the oracle."""
  inputs = keras.Input(p_shape)
  model = keras.Model(inputs, keras.layers.Identity(name="out")(inputs), name=name)
  model.compile(loss=loss)
  return model


# Identity models shared by the cases of one prediction shape (building one costs as much as the
# assertions on a simple loss): `_BARE` is never compiled with a loss (`loss_fn=` scores with it),
# `_SHARED` is compiled anew with each case's loss, which is all that `compile` makes of a model.
_BARE = {}
_SHARED = {}


def _bare(p_shape):
  """The identity model of `p_shape`, compiled without a loss (shared)."""
  p_shape = tuple(p_shape)
  if p_shape not in _BARE:
    _BARE[p_shape] = _compiled(None, p_shape, name="bare")
  return _BARE[p_shape]


def _recompiled(loss, p_shape):
  """The shared identity model of `p_shape`, compiled now with `loss`: the oracle of one case."""
  p_shape = tuple(p_shape)
  if p_shape not in _SHARED:
    _SHARED[p_shape] = _compiled(loss, p_shape, name="shared")
  else:
    _SHARED[p_shape].compile(loss=loss)
  return _SHARED[p_shape]


def _oracle(model, y, y_pred):
  """`[N]`: each example's loss alone, as the compiled model computes it on a batch of one."""
  return np.array([np.mean(model.compute_loss(x=None, y=y[i:i + 1], y_pred=y_pred[i:i + 1]))
                   for i in range(len(y_pred))], np.float32)


def _instance(form, loss):
  return loss() if form == "object" else loss


def _two_outputs(loss):
  inputs = keras.Input((1,))
  model = keras.Model(inputs, [keras.layers.Identity(name="a")(inputs),
                               keras.layers.Identity(name="b")(inputs)])
  model.compile(loss=loss)
  return model


def my_loss(y_true, y_pred):
  """A custom loss of per-element values, as users write them."""
  return tf.square(y_true - y_pred)


class Squared(keras.losses.Loss):
  """A custom `Loss` subclass: `compile` calls it without aligning the ranks."""

  def call(self, y_true, y_pred):
    return tf.square(y_true - y_pred)


class KerasLossesTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    # tf.test.TestCase resets TensorFlow's global seed before each test, which also clears the
    # eager kernel cache: with hundreds of short cases, rebuilding the kernels costs more than
    # a case itself. These tests draw from NumPy generators and build models without weights,
    # so no TensorFlow seed is read here and the reset can be left out.
    self._set_default_seed = False
    super().setUp()

  def assertMatchesCompiled(self, model, loss, y, y_pred, expected=None):
    """Every tfjest path gives each example's loss as `model` computes it on a batch of one.

    Args:
      model: an identity model (its inputs are the predictions) compiled with `loss()`.
      loss: makes a fresh copy of the loss `model` was compiled with, for the `loss_fn=` paths.
      y: labels of `N` examples.
      y_pred: predictions of the same examples.
      expected: `[N]`, if not `_oracle(model, y, y_pred)`.
    """
    expected = _oracle(model, y, y_pred) if expected is None else expected
    self.assertTrue(np.all(np.isfinite(expected)), expected)
    bare = _bare(y_pred.shape[1:])
    paths = {  # the scorer's path (the identity model's x is y_pred), then the public functions
        "compiled": lambda: adapters.classification_losses(
            model, y_pred, y, adapters.resolve_loss_fn(model, None, "learner"), "learner"),
        "loss_fn=": lambda: adapters.classification_losses(
            bare, y_pred, y, adapters.resolve_loss_fn(bare, loss(), "learner"), "learner"),
        "per_example_loss": lambda: tfjest.per_example_loss(
            adapters._single_loss(loss()), y, y_pred),  # pylint: disable=protected-access
        "resolved": lambda: adapters.resolve_loss_fn(model, None, "learner")(y, y_pred),
        "resolved twice": lambda: tfjest.per_example_loss(
            adapters.resolve_loss_fn(model, None, "learner"), y, y_pred),
    }
    wrong = {}
    for how, path in paths.items():
      try:
        got = path()
      except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
        wrong[how] = f"raised {type(e).__name__}: {str(e)[:200]}"
        continue
      if got.shape != (N,) or got.dtype != tf.float32:
        wrong[how] = f"shape {got.shape}, dtype {got.dtype.name}"
      elif not np.allclose(got, expected, rtol=1e-5, atol=1e-6):
        wrong[how] = f"{got.numpy()} != {expected}"
    self.assertEmpty(wrong, "; ".join(f"PATH {k} => {v}" for k, v in wrong.items()))

  @parameterized.named_parameters(*_cases())
  def test_per_example_loss_is_the_compiled_loss_of_one_example(self, form, loss, kind, y_shape,
                                                               p_shape):
    y, y_pred = _data(kind, y_shape, p_shape, seed=len(y_shape) + 7 * len(p_shape))
    self.assertMatchesCompiled(_recompiled(_instance(form, loss), p_shape),
                               lambda: _instance(form, loss), y, y_pred)

  def test_every_exported_loss_is_covered_or_excluded(self):
    keys = {_key(form, loss) for form, _, loss in _exported()}
    self.assertEmpty(EXCLUDED - keys, "an exclusion names no exported loss")
    self.assertEmpty(set(SPECS) - keys, "a spec names no exported loss")
    self.assertGreaterEqual(len(_cases()), 150)

  def test_exclusions_still_hold(self):
    for (form, name), reason in FORM_EXCLUDED.items():
      if reason == "unregistered":
        with self.assertRaisesRegex(ValueError, "Could not interpret loss identifier"):
          keras.losses.get(name)
      else:
        self.assertIs(inspect.signature(getattr(keras.losses, name)).parameters["q"].default,
                      inspect.Parameter.empty, (form, name))

  @parameterized.named_parameters(
      ("bce_logits_smoothing", lambda: keras.losses.BinaryCrossentropy(
          from_logits=True, label_smoothing=0.1), "binary", (), (1,)),
      ("binary_focal", lambda: keras.losses.BinaryFocalCrossentropy(
          apply_class_balancing=True, alpha=0.3, gamma=3.0), "binary", (C,), (C,)),
      ("huber", lambda: keras.losses.Huber(delta=0.5), "signed", (), (1,)),
      ("huber_steps", lambda: keras.losses.Huber(delta=0.5), "signed", (T,), (T, 1)),
      ("sparse_logits_ignore_class", lambda: keras.losses.SparseCategoricalCrossentropy(
          from_logits=True, ignore_class=0), "sparse", (T,), (T, C)),
      ("sparse_ignore_class_n", lambda: keras.losses.SparseCategoricalCrossentropy(
          ignore_class=0), "sparse", (), (C,)),
      ("categorical_focal", lambda: keras.losses.CategoricalFocalCrossentropy(
          alpha=0.5, gamma=1.0, from_logits=True, label_smoothing=0.2), "one_hot", (C,), (C,)),
      ("generalized", lambda: keras.losses.CategoricalGeneralizedCrossEntropy(q=0.2),
       "sparse", (), (C,)),
      ("cosine_axis", lambda: keras.losses.CosineSimilarity(axis=1), "signed", (T, C), (T, C)),
      ("dice_axis", lambda: keras.losses.Dice(axis=(1,)), "binary", (4, 4), (4, 4)),
      ("tversky", lambda: keras.losses.Tversky(alpha=0.8, beta=0.2), "binary", (C,), (C,)),
  )
  def test_a_loss_objects_options_are_honoured(self, loss, kind, y_shape, p_shape):
    y, y_pred = _data(kind, y_shape, p_shape, seed=3)
    if kind == "sparse":
      y[0] = 0  # ignore_class=0 masks every step of example 0, and some of the others
    self.assertMatchesCompiled(_compiled(loss(), p_shape), loss, y, y_pred)
    default = type(loss())()
    self.assertNotAllClose(tfjest.per_example_loss(loss(), y, y_pred),
                           tfjest.per_example_loss(default, y, y_pred))

  @parameterized.product(
      reduction=["sum", "none", None, "mean", "mean_with_sample_weight", "sum_over_batch_size"],
      loss=["mse", "sparse_ignore_class"])
  def test_the_loss_reduction_reduces_one_example_as_on_a_batch_of_one(self, reduction, loss):
    if loss == "mse":
      y, y_pred = _data("prob", (T, 1), (T, 1), seed=4)
      make = lambda reduction: keras.losses.MeanSquaredError(reduction=reduction)
    else:
      y, y_pred = _data("sparse", (T,), (T, C), seed=5)
      make = lambda reduction: keras.losses.SparseCategoricalCrossentropy(
          ignore_class=0, reduction=reduction)
    model = _compiled(make(reduction), y_pred.shape[1:])
    # With no reduction compute_loss returns every element's loss: per example they are
    # reduced as by the default reduction.
    expected = None
    if reduction in ("none", None):
      expected = _oracle(_compiled(make("sum_over_batch_size"), y_pred.shape[1:]), y, y_pred)
    self.assertMatchesCompiled(model, lambda: make(reduction), y, y_pred, expected)
    if reduction == "sum":
      self.assertNotAllClose(tfjest.per_example_loss(make(reduction), y, y_pred),
                             tfjest.per_example_loss(make("mean"), y, y_pred))

  @parameterized.named_parameters(
      ("labels_n", my_loss, "prob", (), (1,), np.float32),
      ("labels_n1", my_loss, "prob", (1,), (1,), np.float32),
      ("int_labels_n", my_loss, "binary", (), (1,), np.int32),
      ("steps", my_loss, "prob", (T,), (T, 1), np.float32),
      ("subclass_labels_n", Squared, "prob", (), (1,), np.float32),
      ("subclass_steps", Squared, "prob", (T, 1), (T, 1), np.float32),
      ("batch_mean", lambda y, p: keras.losses.MeanSquaredError()(y, p), "prob", (), (1,),
       np.float32),
      ("batch_mean_steps", lambda y, p: tf.reduce_mean(tf.abs(y - p)), "prob", (T, 1), (T, 1),
       np.float32),
  )
  def test_custom_losses(self, loss, kind, y_shape, p_shape, dtype):
    y, y_pred = _data(kind, y_shape, p_shape, seed=6)
    make = (lambda: loss()) if isinstance(loss, type) else (lambda: loss)
    self.assertMatchesCompiled(_compiled(make(), p_shape), make, y.astype(dtype), y_pred)

  @parameterized.product(
      container=["list", "tuple", "dict"],
      loss=["binary_crossentropy", "BinaryCrossentropy", "function"])
  def test_one_loss_in_a_list_or_mapping_is_that_loss(self, container, loss):
    def make():
      single = {"BinaryCrossentropy": keras.losses.BinaryCrossentropy(),
                "function": keras.losses.binary_crossentropy}.get(loss, loss)
      return {"list": [single], "tuple": (single,), "dict": {"out": single}}[container]
    y, y_pred = _data("binary", (), (1,), seed=7)
    self.assertMatchesCompiled(_compiled(make(), (1,)), make, y, y_pred)

  @parameterized.parameters(("binary_crossentropy",), ({"out": "binary_crossentropy"},))
  def test_a_single_output_in_a_mapping_is_that_output(self, loss):
    inputs = keras.Input((1,))
    model = keras.Model(inputs, {"out": keras.layers.Identity(name="out")(inputs)})
    model.compile(loss=loss)
    y, x = _data("binary", (), (1,), seed=12)
    expected = [float(model.compute_loss(x=None, y=y[i:i + 1], y_pred=model(x[i:i + 1])))
                for i in range(N)]
    loss_fn = adapters.resolve_loss_fn(model, None, "learner")
    self.assertAllClose(adapters.classification_losses(model, x, y, loss_fn, "learner"),
                        expected, rtol=1e-5)

  @parameterized.parameters(("crossentropy", "binary", (), (1,)),
                            ("ce", "sparse", (), (C,)),
                            ("CE", "sparse", (1,), (C,)),
                            ("crossentropy", "one_hot", (C,), (C,)))
  def test_crossentropy_aliases_pick_the_loss_compile_picks(self, name, kind, y_shape, p_shape):
    y, y_pred = _data(kind, y_shape, p_shape, seed=8)
    self.assertMatchesCompiled(_compiled(name, p_shape), lambda: name, y, y_pred)

  @parameterized.parameters((T,), (T, 1))
  def test_a_mask_on_the_predictions_is_honoured(self, *y_shape):
    # With labels [N, T] mse averages the steps before the mask applies: Keras then keeps the
    # loss of an example with any step unmasked, and zeroes one wholly masked.
    inputs = keras.Input((T, 1))
    model = keras.Model(inputs, keras.layers.Masking(0.0)(inputs))
    model.compile(loss="mse")
    x = _data("prob", (), (T, 1), seed=9)[1]
    x[0] = 0.0  # every step of example 0 is masked
    x[1, 3:] = 0.0
    y = _data("prob", y_shape, (), seed=10)[0]
    expected = [float(model.compute_loss(x=None, y=y[i:i + 1], y_pred=model(x[i:i + 1])))
                for i in range(N)]
    loss_fn = adapters.resolve_loss_fn(model, None, "learner")
    got = adapters.classification_losses(model, x, y, loss_fn, "learner")
    self.assertAllClose(got, expected, rtol=1e-5, atol=1e-6)
    self.assertNotAllClose(got, loss_fn(y, x))  # without its mask

  @parameterized.named_parameters(
      ("by_name", "binary_crossentropy", "binary", (), (1,)),
      ("one_at_a_time", "dice", "binary", (C,), (C,)),
      ("masked", keras.losses.SparseCategoricalCrossentropy(ignore_class=0), "sparse", (T,),
       (T, C)),
      ("custom", my_loss, "prob", (T,), (T, 1)),
  )
  def test_in_a_graph_and_a_pipeline(self, loss, kind, y_shape, p_shape):
    y, y_pred = _data(kind, y_shape, p_shape, seed=11)
    loss_fn = adapters.resolve_loss_fn(_compiled(loss, p_shape), None, "learner")
    eager = loss_fn(y, y_pred)
    self.assertAllClose(tf.function(loss_fn)(y, y_pred), eager, rtol=1e-5)
    batches = tf.data.Dataset.from_tensor_slices((y, y_pred)).batch(N).map(loss_fn)
    self.assertAllClose(next(iter(batches)), eager, rtol=1e-5)
    y_pred = tf.constant(y_pred)
    with tf.GradientTape() as tape:
      tape.watch(y_pred)
      total = tf.reduce_sum(loss_fn(y, y_pred))
    self.assertTrue(np.all(np.isfinite(tape.gradient(total, y_pred))))

  @parameterized.named_parameters(
      ("list", ["mse", "mae"], "compiled with several losses.*Pass `loss_fn=`"),
      ("dict", {"a": "mse", "b": "mae"}, "compiled with several losses.*Pass `loss_fn=`"),
      ("one_for_both", "mse", "has 2 outputs.*Pass `loss_fn=`.*Received: loss='mse'"),
  )
  def test_several_losses_ask_for_loss_fn(self, loss, message):
    with self.assertRaisesRegex(ValueError, message):
      adapters.resolve_loss_fn(_two_outputs(loss), None, "learner")

  def test_a_two_output_model_is_scored_with_loss_fn(self):
    model = _two_outputs(["mse", "mae"])
    loss_fn = adapters.resolve_loss_fn(model, lambda y, p: tf.abs(y - p[0]) + tf.abs(y - p[1]),
                                       "learner")
    x, y = np.arange(N, dtype=np.float32)[:, None], np.ones(N, np.float32)
    self.assertAllClose(adapters.classification_losses(model, x, y, loss_fn, "learner"),
                        2 * np.abs(1 - np.arange(N)))

  @parameterized.named_parameters(
      ("several", ["mse", "mae"], ValueError, "`loss_fn` must be one loss.*Received: loss_fn="),
      ("unknown_name", "msqe", ValueError,
       "Unknown loss name 'msqe'.*Received: loss_fn='msqe'"),
      ("not_a_loss", 3, TypeError, "Expected a loss.*Received: loss_fn=3"),
  )
  def test_a_wrong_loss_fn_is_named(self, loss_fn, error, message):
    with self.assertRaisesRegex(error, message):
      adapters.resolve_loss_fn(_compiled("mse", (1,)), loss_fn, "learner")

  @parameterized.parameters(("circle",), ("Circle",), (keras.losses.Circle(),),
                            (keras.losses.circle,))
  def test_circle_is_refused(self, loss):
    with self.assertRaisesRegex(ValueError, "Circle loss compares each example.*loss_fn="):
      adapters.resolve_loss_fn(_compiled(loss, (C,)), None, "learner")

  def test_no_loss_is_named(self):
    with self.assertRaisesRegex(ValueError, "compile the learner with a loss or pass `loss_fn="):
      adapters.resolve_loss_fn(_compiled(None, (1,)), None, "learner")


if __name__ == "__main__":
  tf.test.main()
