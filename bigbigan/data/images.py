"""Image preprocessing for BigBiGAN: RGB uint8 at the encoder's resolution, made on the host.

    preprocess = image_preprocess("imagenet2012", resolution=256, train=True)
    batches = pipeline.train_batches("imagenet2012", "train", 2048, seed, preprocess)

Every dataset's images become {"image": uint8 [resolution, resolution, 3], "label": int32};
grayscale images (MNIST) are repeated to three channels. How an image is framed depends on
the dataset (`FRAMING`):
- "random_resized" in training (ImageNet, CelebA, image folders): a random crop covering 8%
  to 100% of the image with an aspect ratio in [3/4, 4/3], resized (Inception-style
  augmentation); in evaluation, the central square, resized;
- "center": the central square, resized, in training and evaluation;
- "resize" (small images that are the object: MNIST, CIFAR-10, SVHN): the whole image,
  resized.
Horizontal flips in training where they keep the data's meaning (not for digits). Images
travel to the devices as uint8; the update normalises them to [-1, 1] and average-pools
them to D's resolution there (families/common.py).

Decoding happens here, late: the pipeline hands over the encoded bytes of JPEG and PNG
images (TFDS's `SkipDecoding`, image folders' file contents), so its shuffle buffer holds
compressed images and skipping examples to resume decodes nothing. A JPEG's crop window is
computed from its header (`tf.image.extract_jpeg_shape`) and only the window is decoded
(`tf.image.decode_and_crop_jpeg`); other formats are decoded whole, then sliced. The window
is the one the same seed draws on the decoded image, and the window's pixels are exactly
those of the decoded image (see `_decode_window`), so an image's crop does not depend on
whether it arrived encoded or decoded. Datasets stored as raw uint8 tensors arrive decoded
and are framed the same way.
"""

from typing import Callable

import tensorflow as tf

from bigbigan.data.pipeline import STREAM_INDEX_KEY, Example, Preprocess
from bigbigan.errors import ConfigError

# Dataset family -> (framing, horizontal flips in training). "folder" is a directory of
# JPEG/PNG files (data/folder.py): photos, framed as ImageNet's are.
FRAMING = {
    "imagenet2012": ("random_resized", True),
    "imagenet_resized": ("resize", True),
    "celeb_a": ("random_resized", True),
    "cifar10": ("resize", True),
    "svhn_cropped": ("resize", False),
    "mnist": ("resize", False),
    "folder": ("random_resized", True),
}
# The crop's share of the image's area, and its aspect ratio, for "random_resized".
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)

# (height, width) int32 -> (top, left, height, width) int32 scalars.
Window = tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]
WindowFn = Callable[[tf.Tensor], Window]


def dataset_family(dataset: str) -> str:
  """"imagenet_resized/64x64:0.1.0" -> "imagenet_resized"; "folder:/data/x" -> "folder"."""
  return dataset.split(":")[0].split("/")[0]


def center_window(image_size: tf.Tensor) -> Window:
  """The central square of an image of `image_size` (height, width)."""
  height, width = image_size[0], image_size[1]
  side = tf.minimum(height, width)
  return (height - side) // 2, (width - side) // 2, side, side


def random_window(image_size: tf.Tensor, seed: tf.Tensor) -> Window:
  """The random-resized crop's window in an image of `image_size` (height, width), a
  function of `seed` (a [2] int64 tensor) and the size alone."""
  # The channel count does not enter the draw; 3 is what the RGB image would have.
  shape = tf.concat([tf.cast(image_size[:2], tf.int32), [3]], axis=0)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=CROP_ASPECT, area_range=CROP_AREA,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return begin[0], begin[1], size[0], size[1]


def _whole(image_size: tf.Tensor) -> Window:
  return 0, 0, image_size[0], image_size[1]


def _decode_window(contents: tf.Tensor, window_fn: WindowFn) -> tf.Tensor:
  """The RGB pixels of `window_fn`'s window of an encoded JPEG/PNG (GIF, BMP) image.

  For a JPEG only the window is decoded, one column wider on either side where the image
  has one: libjpeg's chroma upsampling treats a cropped decode's edge columns as the
  image's edges, so without the margin the window's first and last columns could differ
  from the whole decoded image's by a few levels (4:2:0 JPEGs, as most photos are).
  """
  def jpeg():
    size = tf.image.extract_jpeg_shape(contents)[:2]
    top, left, height, width = window_fn(size)
    margin_left = tf.minimum(left, 1)
    margin_right = tf.minimum(size[1] - left - width, 1)
    image = tf.image.decode_and_crop_jpeg(
        contents, tf.stack([top, left - margin_left, height, width + margin_left + margin_right]),
        channels=3)
    return image[:, margin_left:margin_left + width]

  def other():
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    top, left, height, width = window_fn(tf.shape(image)[:2])
    return image[top:top + height, left:left + width]

  return tf.cond(tf.io.is_jpeg(contents), jpeg, other)


def framed(image: tf.Tensor, window_fn: WindowFn) -> tf.Tensor:
  """`window_fn`'s window of `image` as RGB uint8: decoded from its bytes (tf.string) or
  sliced from its pixels (uint8 [H, W, 1 or 3])."""
  if image.dtype == tf.string:
    return _decode_window(image, window_fn)
  if image.shape[-1] == 1:
    image = tf.repeat(image, 3, axis=-1)
  top, left, height, width = window_fn(tf.shape(image)[:2])
  return image[top:top + height, left:left + width]


def image_preprocess(dataset: str, resolution: int, train: bool, seed: int = 0) -> Preprocess:
  """The preprocessing of `dataset`'s examples at `resolution` pixels.

  Args:
    dataset: a TFDS name of FRAMING's datasets (any config or version of them), or
      "folder:PATH".
    resolution: the output's height and width (the encoder's input resolution).
    train: random crops and flips where the dataset has them; otherwise deterministic.
    seed: the augmentation seed; crops and flips are a function of it and the example's
      place in the training stream (pipeline.STREAM_INDEX_KEY).

  Returns:
    A function from an example with an "image" (encoded bytes, or uint8 [H, W, 1 or 3]
    pixels) and possibly a "label" to
    {"image": uint8 [resolution, resolution, 3], "label": int32 (0 if unlabelled)}.

  Raises:
    ConfigError: the dataset has no framing here.
  """
  family = dataset_family(dataset)
  if family not in FRAMING:
    raise ConfigError(f"config.dataset={dataset!r} has no image preprocessing: allowed "
                      f"{tuple(FRAMING)} (any of their configs; folder:PATH for a folder)")
  framing, flips = FRAMING[family]
  random_crop = train and framing == "random_resized"
  flip = train and flips

  def preprocess(example: Example) -> Example:
    # Training examples carry their place in the stream: a fresh crop and flip for each
    # visit of an image, and the same ones for a resumed run.
    index = example.get(STREAM_INDEX_KEY, tf.constant(0, tf.int64))
    example_seed = tf.stack([tf.constant(seed, tf.int64), index])
    if random_crop:
      window_fn = lambda size: random_window(size, example_seed)  # noqa: E731
    elif framing != "resize":
      window_fn = center_window
    else:
      window_fn = _whole
    image = framed(example["image"], window_fn)
    image = tf.image.resize(image, [resolution, resolution], method="bicubic",
                            antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    if flip:
      image = tf.image.stateless_random_flip_left_right(image, example_seed + 1)
    label = tf.cast(example.get("label", tf.constant(0)), tf.int32)
    return {"image": image, "label": label}

  return preprocess
