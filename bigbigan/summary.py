"""Prints each network's parameter count and forward GFLOPs per example, as JSON.

    python -m bigbigan.summary --config=configs/biggan.py:conditional

Nothing is allocated: the variables' shapes come from `jax.eval_shape` of the init, and the
FLOPs from XLA's cost analysis of the lowered (not compiled) inference forward on one
example. Parameters count the "params" collection only; BatchNorm statistics and spectral
norm's power-iteration vectors are listed apart as "state".
"""

import json
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from bigbigan import command_line, families
from bigbigan.errors import BigBiganError


def xla_flops(computation) -> float:
  """FLOPs of a lowered or compiled jax computation, from XLA's cost analysis."""
  cost = computation.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # Older jax: one per device.
  return float(cost["flops"])


def _count(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def summarise(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """{network: {"parameters", "state", "gflops_per_example", "inputs"}} for G, E and D."""
  family = families.of(config)
  networks = family.build_networks(config)
  summary = {}
  for name, module in networks._asdict().items():
    if module is None:
      continue
    inputs = family.example_inputs(config, name)
    rngs = {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)}
    variables = jax.eval_shape(lambda kwargs: module.init(rngs, **kwargs, train=False),
                               inputs)
    forward = jax.jit(lambda v, kwargs: module.apply(v, **kwargs, train=False,
                                                     rngs={"latent": jax.random.PRNGKey(0)}))
    flops = xla_flops(forward.lower(variables, inputs))
    summary[name] = {
        "parameters": _count(variables["params"]),
        "state": {collection: _count(tree) for collection, tree in variables.items()
                  if collection != "params"},
        "gflops_per_example": float(f"{flops / 1e9:.4g}"),
        "inputs": {k: str(tuple(v.shape)) for k, v in inputs.items()},
    }
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    families.validate_networks(_CONFIG.value)
    summary = summarise(_CONFIG.value)
  except BigBiganError as error:
    print(f"bigbigan.summary: error: {error}", file=sys.stderr)
    sys.exit(1)
  json.dump(summary, sys.stdout, indent=2)
  print()


if __name__ == "__main__":
  # Defined here, not on import: the library functions are importable beside other tools.
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=command_line.parser("bigbigan.summary"))
