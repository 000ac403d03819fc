"""notebooks/pretrained_encoder.ipynb runs top to bottom on CPU against a tiny bundle, on the
mock MNIST, and its cells print the shapes the bundle's networks give."""

import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from mnist_mock import SPLIT_SIZES

NOTEBOOK = REPO / "notebooks" / "pretrained_encoder.ipynb"


def _with_test_inputs(notebook, bundle, metadata_dir):
  """The notebook with its parameters cell set for the test (as papermill would) and a first
  cell that serves tests/mnist_mock.py's MNIST through TFDS inside the kernel."""
  parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(parameters) == 1, "the notebook needs one cell tagged 'parameters'"
  parameters[0].source = "\n".join([
      f"BUNDLE = {str(bundle)!r}", "DATASET = ''", f"DATA_DIR = {str(metadata_dir)!r}",
      "TRAIN_SPLIT, TEST_SPLIT = 'train', 'test'",
      f"NUM_TRAIN, NUM_TEST = {SPLIT_SIZES['train']}, {SPLIT_SIZES['test']}"])
  mock = nbformat.v4.new_code_cell("\n".join([
      "import sys", f"sys.path.insert(0, {str(REPO / 'tests')!r})",
      "import mnist_mock, tensorflow_datasets as tfds",
      # Kept in a variable: a collected context manager would undo the mock.
      f"_mock = tfds.testing.mock_data(data_dir={str(metadata_dir)!r}, "
      "as_dataset_fn=mnist_mock.mock_as_dataset)", "_mock.__enter__()"]))
  notebook.cells.insert(0, mock)
  return notebook


def _text(cell) -> str:
  return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


@pytest.mark.slow
def test_notebook_runs_on_cpu_with_a_tiny_bundle(tiny_bundle, metadata_dir, tmp_path):
  notebook = _with_test_inputs(nbformat.read(NOTEBOOK, as_version=4), tiny_bundle["bundle"],
                               metadata_dir)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  text = "\n".join(_text(cell) for cell in notebook.cells)
  config = tiny_bundle["config"]
  side, latent = config.resolution, config.latent_dim
  train, test = SPLIT_SIZES["train"], SPLIT_SIZES["test"]
  # The tiny encoder's trunk (ResNet-26, base width 16) ends with 512 channels.
  features = {"z_mean": latent, "z_stdev": latent, "z_sample": latent, "avepool_feat": 512,
              "bn_crelu_feat": 1024}
  for expected in [
      f"train: ({train}, {side}, {side}, 3) uint8 test: ({test}, {side}, {side}, 3)",
      *(f"{name}: (8, {width}) float32" for name, width in features.items()),
      # model.describe(): every call, e.g. encode's z_stdev.
      *(f"\n{call}:\n" for call in ("encode", "generate", "reconstruct", "sample_latents",
                                     "discriminate", "losses")),
      f"z_stdev                    [N, {latent}]",
      f"reconstructions: (8, {side}, {side}, 3)",
      f"interpolation: (8, {side}, {side}, 3)",
      f"prior samples: (8, {side}, {side}, 3) upsampled: (8, {2 * side}, {2 * side}, 3)",
      *(f"\nscore_{name} " for name in ("xz", "x", "z")),
      *(f"loss {name}: " for name in ("discriminator", "encoder_generator", "encoder",
                                      "generator")),
      f"neighbours: ({test}, 5)",
      f"features avepool_feat: train ({train}, 512), test ({test}, 512)",
      f"features bn_crelu_feat: train ({train}, 1024), test ({test}, 1024)"]:
    assert expected in text, f"{expected!r} not in the notebook's output:\n{text}"
  assert f"PretrainedBigBiGAN(step {tiny_bundle['step']}" in text
  accuracies = [float(a) for a in re.findall(r"linear probe accuracy \(\w+\): ([\d.]+)", text)]
  assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)
  figures = [o for c in notebook.cells for o in c.get("outputs", [])
             if o.output_type == "display_data" and "image/png" in o.get("data", {})]
  # Reconstructions, two interpolations, prior samples, neighbours.
  assert len(figures) == 5
