"""Writes tests/data/torch_bilinear_resize.npz: the interpolation matrices of torch's
F.interpolate(mode="bilinear", align_corners=False) from a few input sizes to 299, the
resize pytorch-fid (and this project) applies before the Inception network.

tests/test_inception.py checks the project's resize against them without PyTorch. Each
matrix is torch's own output for one-hot inputs: row j is what output pixel j takes from
each input pixel. Needs PyTorch:

    pip install torch
    python tests/make_torch_resize_fixture.py
"""

import pathlib

import numpy as np
import torch

OUTPUT_SIZE = 299
# A downscale and an upscale of the height, and a width larger than the output.
INPUT_SIZES = (71, 320, 400)
FIXTURE = pathlib.Path(__file__).parent / "data" / "torch_bilinear_resize.npz"


def interpolation_matrix(in_size: int) -> np.ndarray:
  """[OUTPUT_SIZE, in_size] float32: torch's weights of every input pixel in every output
  pixel, along one axis (the resize is separable)."""
  one_hot = torch.eye(in_size, dtype=torch.float32).reshape(in_size, 1, in_size, 1)
  resized = torch.nn.functional.interpolate(one_hot, size=(OUTPUT_SIZE, 1), mode="bilinear",
                                            align_corners=False)
  return resized.reshape(in_size, OUTPUT_SIZE).T.numpy()


def main() -> None:
  matrices = {f"from_{size}": interpolation_matrix(size) for size in INPUT_SIZES}
  np.savez_compressed(FIXTURE, torch_version=np.array(torch.__version__), **matrices)
  print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size:,} bytes)")


if __name__ == "__main__":
  main()
