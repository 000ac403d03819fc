"""bigbigan: bidirectional adversarial representation learning (BiGAN, ALI, BigBiGAN) in JAX/Flax.

The library is importable without side effects; `python -m bigbigan.main` is the entry point,
`bigbigan.load(BUNDLE)` loads a trained model (`python -m bigbigan.export` writes bundles).
"""

__version__ = "0.1.0"


def load(path: str, **kwargs):
  """A trained BigBiGAN from the bundle at `path`: see bigbigan.pretrained.load."""
  # Imported here so that `import bigbigan` stays light (no JAX) for the entry points.
  from bigbigan import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained.load(path, **kwargs)
