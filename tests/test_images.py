"""BigBiGAN's image preprocessing: RGB uint8 at the encoder's resolution, D's pooled from it
on the device, crops and flips seeded by the example's place in the stream."""

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from bigbigan import bigbigan_steps
from bigbigan.data import images, pipeline
from bigbigan.errors import ConfigError, DatasetError


def test_mnist_batches_at_the_two_resolutions(mock_mnist):
  preprocess = images.image_preprocess("mnist", resolution=64, train=True)
  batch = next(pipeline.train_batches("mnist", "train", 8, seed=0, preprocess=preprocess,
                                      data_dir=mock_mnist, process_index=0, process_count=1))
  assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32
  # Grayscale repeated to RGB.
  np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
  # On the device: [-1, 1] at E's 64 pixels, and D's 32 by 2x2 average pooling.
  x = bigbigan_steps.normalise_images(jnp.asarray(batch["image"]))
  x_d = bigbigan_steps.to_discriminator_resolution(x, 32)
  assert x.dtype == x_d.dtype == jnp.float32 and x_d.shape == (8, 32, 32, 3)
  assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.5
  evaluation = next(pipeline.eval_batches(
      "mnist", "test", 8, images.image_preprocess("mnist", 32, train=False),
      data_dir=mock_mnist, process_index=0, process_count=1))
  assert evaluation["image"].shape == (8, 32, 32, 3)


def _photo(height=300, width=200):
  pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
  return {"image": tf.constant(pixels), "label": tf.constant(7, tf.int64)}


def test_random_resized_crops_vary_per_visit_and_repeat_per_index():
  preprocess = images.image_preprocess("imagenet2012", resolution=64, train=True, seed=3)
  at = lambda index: preprocess({**_photo(), pipeline.STREAM_INDEX_KEY: tf.constant(
      index, tf.int64)})["image"].numpy()
  first, again, other = at(5), at(5), at(6)
  assert first.shape == (64, 64, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, again)  # A resumed run sees the same crop.
  assert not np.array_equal(first, other)  # The next visit, another crop.


def test_evaluation_takes_the_central_square():
  preprocess = images.image_preprocess("imagenet2012:5.1.0", resolution=100, train=False)
  example = _photo(300, 100)
  out = preprocess(example)
  assert int(out["label"]) == 7
  expected = example["image"].numpy()[100:200]  # The middle 100x100 of a 300x100 image.
  np.testing.assert_array_equal(out["image"].numpy(), expected)


def test_unknown_dataset_and_unprepared_imagenet_are_clear_errors(tmp_path):
  with pytest.raises(ConfigError, match="has no image preprocessing"):
    images.image_preprocess("coco", 64, train=True)
  with pytest.raises(DatasetError) as error:
    pipeline.prepared_builder("imagenet2012", str(tmp_path))
  message = str(error.value)
  assert "ILSVRC2012_img_train.tar" in message and f"{tmp_path}/downloads/manual" in message
  assert "\n" not in message


def test_pipeline_benchmark_reports_images_per_core(monkeypatch):
  import os  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from bigbigan import benchmark  # pylint: disable=g-import-not-at-top
  # A clock that the benchmark alone reads: the timed loop starts at 100 s and ends at
  # 102.5 s, so 2 batches of 8 images took 2.5 s, on 3 cores (a count no machine here has
  # by chance): 16 / 2.5 = 6.4 images/s, 6.4 / 3 per core.
  readings = iter([100.0, 102.5])
  monkeypatch.setattr(benchmark, "time", types.SimpleNamespace(
      perf_counter=lambda: next(readings)))
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7}, raising=False)
  monkeypatch.setattr(os, "cpu_count", lambda: 3)
  results = benchmark.pipeline_benchmark(resolution=64, batch_size=8, batches=2)
  assert next(readings, None) is None  # Both readings taken: the timed span is the loop's.
  assert results == {"mode": "pipeline", "resolution": 64, "batch_size": 8,
                     "image_shape": [64, 64, 3], "cpu_cores": 3,
                     "images_per_second": pytest.approx(16 / 2.5, rel=1e-12),
                     "images_per_second_per_core": pytest.approx(16 / 2.5 / 3, rel=1e-12)}
