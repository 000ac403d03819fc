"""BigBiGAN's image preprocessing: RGB uint8 at the encoder's resolution, D's pooled from it
on the device, crops and flips seeded by the example's place in the stream."""

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from bigbigan.data import images, mnist, pipeline
from bigbigan.errors import ConfigError, DatasetError
from bigbigan.families import common


def test_mnist_batches_at_the_two_resolutions(mock_mnist):
  preprocess = images.image_preprocess("mnist", resolution=64, train=True)
  batch = next(pipeline.train_batches("mnist", "train", 8, seed=0, preprocess=preprocess,
                                      data_dir=mock_mnist, process_index=0, process_count=1))
  assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32
  # Grayscale repeated to RGB.
  np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
  # On the device: [-1, 1] at E's 64 pixels, and D's 32 by 2x2 average pooling.
  x = common.normalise_images(jnp.asarray(batch["image"]))
  x_d = common.to_discriminator_resolution(x, 32)
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


def _jpeg_photos(seed=0):
  """4:2:0 JPEGs (as most photos, the case where a cropped decode's edge columns differ
  without the margin), one 4:4:4 and one grayscale, of uneven sizes."""
  rng = np.random.default_rng(seed)
  photos = []
  for height, width, chroma_downsampling in [(75, 101, True), (64, 96, True),
                                              (53, 40, True), (70, 66, False)]:
    field = rng.uniform(0, 255, (1, height // 4 + 2, width // 4 + 2, 3)).astype(np.float32)
    pixels = tf.image.resize(field, [height, width], method="bicubic")[0].numpy()
    pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
    photos.append(tf.io.encode_jpeg(pixels, quality=90,
                                    chroma_downsampling=chroma_downsampling))
  photos.append(tf.io.encode_jpeg(rng.integers(0, 256, (45, 70, 1), dtype=np.uint8)))
  return photos


def _drawn_on_decoded(decoded, seed, index):
  """The window the preprocessing drew on decoded RGB pixels, written out independently:
  `stateless_sample_distorted_bounding_box` on the image's shape."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(decoded), bounding_boxes=tf.zeros([1, 0, 4]), seed=[seed, index],
      min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return [int(begin[0]), int(begin[1]), int(size[0]), int(size[1])]


def test_the_window_from_a_jpeg_header_is_the_one_drawn_on_its_pixels():
  for photo in _jpeg_photos():
    decoded = tf.io.decode_jpeg(photo, channels=3)
    header = tf.image.extract_jpeg_shape(photo)[:2]
    for seed, index in [(0, 0), (3, 5), (3, 6), (11, 10**9)]:
      window = images.random_window(header, tf.constant([seed, index], tf.int64))
      assert [int(w) for w in window] == _drawn_on_decoded(decoded, seed, index)


def test_late_decoding_gives_the_pixels_of_decoding_then_slicing():
  photos = _jpeg_photos()
  rng = np.random.default_rng(1)
  for photo in photos:
    decoded = tf.io.decode_jpeg(photo, channels=3).numpy()
    height, width = decoded.shape[:2]
    # Windows at every edge, on and off the 16-pixel blocks of 4:2:0 chroma.
    windows = [(0, 0, height, width), (0, 16, height, 32), (3, 17, 20, 31),
               (height - 9, width - 7, 9, 7), (5, 1, 11, width - 2)]
    windows += [(int(t), int(l), int(rng.integers(1, height - t + 1)),
                 int(rng.integers(1, width - l + 1)))
                for t, l in zip(rng.integers(0, height - 1, 20), rng.integers(0, width - 1, 20))]
    for top, left, h, w in windows:
      window_fn = lambda size, window=(top, left, h, w): window  # noqa: E731
      np.testing.assert_array_equal(images.framed(photo, window_fn).numpy(),
                                    decoded[top:top + h, left:left + w],
                                    err_msg=f"window {(top, left, h, w)} of {decoded.shape}")
  # Whole preprocessing, training and evaluation, JPEG and PNG: bytes and pixels alike.
  png = tf.io.encode_png(tf.io.decode_jpeg(photos[0], channels=3))
  for train in (True, False):
    preprocess = images.image_preprocess("imagenet2012", 32, train=train, seed=2)
    for encoded in photos + [png]:
      pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False)
      for index in range(4):
        at = lambda image, i=index: preprocess(  # noqa: E731
            {"image": image, pipeline.STREAM_INDEX_KEY: tf.constant(i, tf.int64)})["image"]
        np.testing.assert_array_equal(at(encoded).numpy(), at(pixels).numpy())


def test_the_shuffle_and_the_resume_skip_hold_encoded_images(mock_mnist):
  seen = []

  def recording(example):
    # Encoded where the examples were shuffled and skipped: preprocess gets the PNG bytes.
    assert example["image"].dtype == tf.string
    index = tf.py_function(lambda i: seen.append(int(i)) or i,
                           [example[pipeline.STREAM_INDEX_KEY]], tf.int64)
    return {"index": index}

  batches = pipeline.train_batches("mnist", "train", 2, seed=0, preprocess=recording,
                                   start_step=7, process_index=0, process_count=1)
  assert [int(i) for i in next(batches)["index"]] == [14, 15]
  # Nothing before the resume point was decoded (the 14 skipped examples).
  assert min(seen) == 14


def test_datasets_stored_decoded_give_the_batches_of_encoded_ones(mock_mnist, monkeypatch):
  """The mock serves raw uint8 tensors when no image decoder is asked for, as a dataset
  stored as tensors would: the same batches as from its PNG bytes."""
  def batches():
    preprocess = images.image_preprocess("mnist", 32, train=True, seed=1)
    train = take_two(pipeline.train_batches("mnist", "train", 4, 0, preprocess,
                                            process_index=0, process_count=1))
    evaluation = list(pipeline.eval_batches("mnist", "test", 4, mnist.mnist_preprocess(),
                                            process_index=0, process_count=1))
    return train + evaluation

  encoded = batches()
  monkeypatch.setattr(pipeline, "late_decoders", lambda builder: None)
  stored_decoded = batches()
  for a, b in zip(encoded, stored_decoded, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def take_two(iterator):
  return [next(iterator), next(iterator)]


@pytest.mark.slow
def test_pipeline_benchmark_reports_images_per_core(monkeypatch):
  import os  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from bigbigan import benchmark  # pylint: disable=g-import-not-at-top
  # A clock that the benchmark alone reads: each path's timed loop of 2 batches of 8 images
  # takes these seconds in 3 rounds, the paths taking turns, whose medians are 2.5 s, 1 s
  # and 4 s; on 3 cores (a count no machine here has by chance).
  durations = [(2.5, 1.0, 4.0), (10.0, 1.0, 0.5), (1.0, 5.0, 8.0)]
  readings = iter([reading for round_ in durations for seconds in round_
                   for reading in (100.0, 100.0 + seconds)])
  monkeypatch.setattr(benchmark, "time", types.SimpleNamespace(
      perf_counter=lambda: next(readings)))
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7}, raising=False)
  monkeypatch.setattr(os, "cpu_count", lambda: 3)
  results = benchmark.pipeline_benchmark(resolution=64, batch_size=8, batches=2,
                                         photo_count=4, shuffle_buffer_size=4, rounds=3)
  assert next(readings, None) is None  # Every reading taken: the timed spans are the loops'.
  photos = benchmark.synthetic_photos(4)
  shapes = [tf.image.extract_jpeg_shape(photo).numpy() for photo in photos]
  buffered = pipeline.DEFAULT_SHUFFLE_BUFFER_SIZE
  assert results["cpu_cores"] == 3 and results["shuffle_buffer_examples"] == buffered
  for name, seconds in [("decode_before_shuffle", 2.5), ("decode_late", 1.0), ("folder", 4.0)]:
    assert results[name]["images_per_second"] == pytest.approx(16 / seconds, rel=1e-12)
    assert results[name]["images_per_second_per_core"] == pytest.approx(16 / seconds / 3,
                                                                        rel=1e-12)
  assert results["decode_late_speedup"] == pytest.approx(2.5)
  # What the buffer holds: decoded images, their JPEGs, or paths.
  assert results["decode_before_shuffle"]["shuffle_buffer_megabytes"] == pytest.approx(
      np.mean([h * w * 3 for h, w, _ in shapes]) * buffered / 1e6)
  assert results["decode_late"]["shuffle_buffer_megabytes"] == pytest.approx(
      np.mean([len(photo) for photo in photos]) * buffered / 1e6)
  assert 0 < results["folder"]["shuffle_buffer_megabytes"] < 3
  assert 90 < results["photo_mean_kilobytes"] < 130  # ImageNet's JPEGs: about 110 KB.
