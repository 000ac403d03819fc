"""Image preprocessing for BigBiGAN: RGB uint8 at the encoder's resolution, made on the host.

    preprocess = image_preprocess("imagenet2012", resolution=256, train=True)
    batches = pipeline.train_batches("imagenet2012", "train", 2048, seed, preprocess)

Every dataset's images become {"image": uint8 [resolution, resolution, 3], "label": int32};
grayscale images (MNIST) are repeated to three channels. How an image is framed depends on
the dataset (`FRAMING`):
- "random_resized" in training (ImageNet, CelebA): a random crop covering 8% to 100% of the
  image with an aspect ratio in [3/4, 4/3], resized (Inception-style augmentation); in
  evaluation, the central square, resized;
- "center": the central square, resized, in training and evaluation;
- "resize" (small images that are the object: MNIST, CIFAR-10, SVHN): the whole image,
  resized.
Horizontal flips in training where they keep the data's meaning (not for digits). Images
travel to the devices as uint8; the update normalises them to [-1, 1] and average-pools
them to D's resolution there (bigbigan_steps.py).
"""

import tensorflow as tf

from bigbigan.data.pipeline import STREAM_INDEX_KEY, Example, Preprocess
from bigbigan.errors import ConfigError

# Dataset -> (framing, horizontal flips in training).
FRAMING = {
    "imagenet2012": ("random_resized", True),
    "imagenet_resized": ("resize", True),
    "celeb_a": ("random_resized", True),
    "cifar10": ("resize", True),
    "svhn_cropped": ("resize", False),
    "mnist": ("resize", False),
}
# The crop's share of the image's area, and its aspect ratio, for "random_resized".
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)


def dataset_family(dataset: str) -> str:
  """"imagenet_resized/64x64:0.1.0" -> "imagenet_resized"."""
  return dataset.split(":")[0].split("/")[0]


def _center_square(image: tf.Tensor) -> tf.Tensor:
  shape = tf.shape(image)
  side = tf.minimum(shape[0], shape[1])
  top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
  return image[top:top + side, left:left + side]


def _random_crop(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=CROP_ASPECT, area_range=CROP_AREA,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return tf.slice(image, begin, size)


def image_preprocess(dataset: str, resolution: int, train: bool, seed: int = 0) -> Preprocess:
  """The preprocessing of `dataset`'s examples at `resolution` pixels.

  Args:
    dataset: a TFDS name of FRAMING's datasets (any config or version of them).
    resolution: the output's height and width (the encoder's input resolution).
    train: random crops and flips where the dataset has them; otherwise deterministic.
    seed: the augmentation seed; crops and flips are a function of it and the example's
      place in the training stream (pipeline.STREAM_INDEX_KEY).

  Returns:
    A function from a TFDS example with an "image" (and a "label", if any) to
    {"image": uint8 [resolution, resolution, 3], "label": int32 (0 if unlabelled)}.

  Raises:
    ConfigError: the dataset has no framing here.
  """
  family = dataset_family(dataset)
  if family not in FRAMING:
    raise ConfigError(f"config.dataset={dataset!r} has no image preprocessing: allowed "
                      f"{tuple(FRAMING)} (any of their configs)")
  framing, flips = FRAMING[family]
  random_crop = train and framing == "random_resized"
  flip = train and flips

  def preprocess(example: Example) -> Example:
    image = example["image"]
    if image.shape[-1] == 1:
      image = tf.repeat(image, 3, axis=-1)
    # Training examples carry their place in the stream: a fresh crop and flip for each
    # visit of an image, and the same ones for a resumed run.
    index = example.get(STREAM_INDEX_KEY, tf.constant(0, tf.int64))
    example_seed = tf.stack([tf.constant(seed, tf.int64), index])
    if random_crop:
      image = _random_crop(image, example_seed)
    elif framing != "resize":
      image = _center_square(image)
    image = tf.image.resize(image, [resolution, resolution], method="bicubic",
                            antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    if flip:
      image = tf.image.stateless_random_flip_left_right(image, example_seed + 1)
    label = tf.cast(example.get("label", tf.constant(0)), tf.int32)
    return {"image": image, "label": label}

  return preprocess
