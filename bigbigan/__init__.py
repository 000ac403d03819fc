"""bigbigan: bidirectional adversarial representation learning (BiGAN, ALI, BigBiGAN) in JAX/Flax.

The library is importable without side effects; `python -m bigbigan.main` is the entry point.
"""

__version__ = "0.1.0"
