"""bigbigan: bidirectional adversarial representation learning (BiGAN, ALI, BigBiGAN) in JAX/Flax.

The library is importable without side effects; `python -m bigbigan.main` is the entry point,
`bigbigan.load("bigbigan-mnist")` loads the model that ships with the package, and
`bigbigan.load(BUNDLE)` any trained model (`python -m bigbigan.export` writes bundles).
"""

__version__ = "0.1.0"


def load(path, devices=None, max_batch_size: int = 256):
  """A trained BigBiGAN: a shipped model by name, or the bundle at `path` (local or gs://),
  verified by its checksum.

  Args:
    path: a shipped model's name ("bigbigan-mnist"; bigbigan.pretrained.shipped_models()
      lists them), or the directory `python -m bigbigan.export --out=...` wrote.
    devices: where to run (default: this process's devices); batches are split over them.
    max_batch_size: the most images run at once (lower it if memory runs out).

  Returns:
    A bigbigan.pretrained.PretrainedBigBiGAN: encode(images), generate(z, upsample=False),
    reconstruct(images), sample_latents(n, truncation=None), discriminate(x, z) and
    losses(images) (if exported with D), signatures() and describe().

  Raises:
    bigbigan.errors.BundleError: an unknown name, or the path is missing, not a bundle, of
      another format version, or corrupt.
  """
  # Imported here so that `import bigbigan` stays light (no JAX) for the entry points.
  from bigbigan import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained.load(path, devices, max_batch_size)
