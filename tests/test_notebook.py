"""notebooks/pretrained_encoder.ipynb runs top to bottom on CPU with its own default, the
shipped bigbigan-mnist, in a kernel where TensorFlow, TFDS and clu cannot be imported (as in
a core install), so on the MNIST sample that ships with the package; its cells print the
shapes the model's networks give, and its guards stop it with one clear line where a
parameter is missing."""

import re

import bigbigan
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "pretrained_encoder.ipynb"
NUM_TRAIN, NUM_TEST = 40, 24
# The first cell of the test's kernel: `import tensorflow` (or TFDS, clu) raises there.
_WITHOUT_TENSORFLOW = "\n".join([
    "import sys", "for name in ('tensorflow', 'tensorflow_datasets', 'clu'):",
    "  sys.modules[name] = None"])


def _with_test_inputs(notebook, bundle=None):
  """The notebook with its parameters cell set for the test (as papermill would; `bundle`
  None keeps the notebook's own), after a first cell that makes TensorFlow unimportable."""
  parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(parameters) == 1, "the notebook needs one cell tagged 'parameters'"
  parameters[0].source += "\n" + "\n".join([
      *([] if bundle is None else [f"BUNDLE = {str(bundle)!r}"]), "IMAGE_FOLDER = ''",
      f"NUM_TRAIN, NUM_TEST = {NUM_TRAIN}, {NUM_TEST}"])
  notebook.cells.insert(0, nbformat.v4.new_code_cell(_WITHOUT_TENSORFLOW))
  return notebook


def _text(cell) -> str:
  return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def test_the_notebook_without_a_bundle_stops_with_one_line(tmp_path):
  notebook = _with_test_inputs(nbformat.read(NOTEBOOK, as_version=4), "")
  with pytest.raises(CellExecutionError) as error:
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
  # IPython shows a SystemExit as its message alone, without a traceback.
  assert (error.value.ename, error.value.evalue) == (
      "SystemExit", "Set BUNDLE (in the parameters cell) to 'bigbigan-mnist' or a bundle's "
      "path: python -m bigbigan.export --workdir=RUN --out=BUNDLE writes one")


@pytest.mark.slow
def test_notebook_opens_the_shipped_model_on_cpu_without_tensorflow(tmp_path):
  notebook = _with_test_inputs(nbformat.read(NOTEBOOK, as_version=4))
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  text = "\n".join(_text(cell) for cell in notebook.cells)
  model = bigbigan.load("bigbigan-mnist")
  side, latent = model.resolution, model.latent_dim
  train, test = NUM_TRAIN, NUM_TEST
  # The MNIST encoder's trunk (ResNet-26, base width 16) ends with 512 channels.
  features = {"z_mean": latent, "z_stdev": latent, "z_sample": latent, "avepool_feat": 512,
              "bn_crelu_feat": 1024}
  for expected in [
      "installed here: jax, flax, optax, orbax, etils, ml_collections, PIL, matplotlib and "
      "bigbigan; nothing added",
      # The MNIST sample's digits, read without TensorFlow.
      "tfds.load('mnist') unavailable (ModuleNotFoundError)",
      "digits from the MNIST sample shipped with bigbigan",
      f"train: ({train}, 28, 28, 1) uint8 test: ({test}, 28, 28, 1)",
      *(f"{name}: (8, {width}) float32" for name, width in features.items()),
      # model.describe(): every call, e.g. encode's z_stdev.
      *(f"\n{call}:\n" for call in ("encode", "generate", "reconstruct", "sample_latents",
                                     "discriminate", "losses")),
      f"z_stdev                    [N, {latent}]",
      f"reconstructions: (8, {side}, {side}, 3)",
      "reconstructions labelled as their image: ",
      f"interpolation: (8, {side}, {side}, 3)",
      f"prior samples: (8, {side}, {side}, 3) upsampled: (8, {2 * side}, {2 * side}, 3)",
      *(f"\nscore_{name} " for name in ("xz", "x", "z")),
      *(f"loss {name}: " for name in ("discriminator", "encoder_generator", "encoder",
                                      "generator")),
      f"neighbours: ({test}, 5)",
      f"features avepool_feat: train ({train}, 512), test ({test}, 512)",
      f"features bn_crelu_feat: train ({train}, 1024), test ({test}, 1024)"]:
    assert expected in text, f"{expected!r} not in the notebook's output:\n{text}"
  assert f"PretrainedBigBiGAN(step {model.step}" in text
  accuracies = [float(a) for a in re.findall(r"linear probe accuracy \(\w+\): ([\d.]+)", text)]
  assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)
  figures = [o for c in notebook.cells for o in c.get("outputs", [])
             if o.output_type == "display_data" and "image/png" in o.get("data", {})]
  # Reconstructions, two interpolations, prior samples, neighbours.
  assert len(figures) == 5
