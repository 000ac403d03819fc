"""Labelled images from a folder of files, without TensorFlow: for a loaded model's users.

    images, labels, classes = image_files.read_folder("gs://bucket/photos", resolution=256)

The folder holds one subfolder per class (their sorted names are labels 0, 1, ...), each with
JPEG or PNG files, as `folder:PATH` datasets are laid out for training (data/folder.py).
Each image is framed as evaluation frames it: its central square, resized (bicubic, with
Pillow's antialiasing) to `resolution`, in RGB. The path may be local or gs:// (etils'
epath, which reads gs:// through TensorFlow or gcsfs, whichever is installed).
"""

from typing import Optional

import numpy as np
from etils import epath
from PIL import Image

from bigbigan.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def framed(image: Image.Image, resolution: int) -> np.ndarray:
  """uint8 [resolution, resolution, 3]: the central square of `image`, resized."""
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  square = image.convert("RGB").crop((left, top, left + side, top + side))
  return np.asarray(square.resize((resolution, resolution), Image.Resampling.BICUBIC))


def _files_below(directory: epath.Path) -> list[epath.Path]:
  """The files anywhere below `directory`, sorted (epath has no recursive glob on gs://)."""
  files = []
  for path in sorted(directory.iterdir()):
    files.extend(_files_below(path) if path.is_dir() else [path])
  return files


def read_folder(root: str, resolution: int, count: Optional[int] = None, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Up to `count` images of the class subfolders of `root`, in an order shuffled by `seed`.

  Returns:
    images uint8 [N, resolution, resolution, 3], labels int64 [N], and the class names.

  Raises:
    DatasetError: `root` is missing, or has no class subfolder with images.
  """
  root_path = epath.Path(root)
  if not root_path.is_dir():
    raise DatasetError(f"{root}: no such folder")
  classes = sorted(p.name for p in root_path.iterdir() if p.is_dir())
  files = [(path, label) for label, name in enumerate(classes)
           for path in _files_below(root_path / name)
           if path.suffix.lower() in IMAGE_SUFFIXES]
  if not files:
    raise DatasetError(f"{root}: no images (.jpg, .jpeg, .png) in class subfolders; lay it "
                       "out as ROOT/CLASS/IMAGE")
  order = np.random.default_rng(seed).permutation(len(files))[:count]
  images, labels = [], []
  for index in order:
    path, label = files[index]
    with path.open("rb") as f:
      images.append(framed(Image.open(f), resolution))
    labels.append(label)
  return np.stack(images), np.asarray(labels, np.int64), classes
