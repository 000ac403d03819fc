"""The training state's bytes per device, replicated and in its ZeRO stage-1 layout.

    python benchmarks/state_bytes.py [--configs resnet50 revnet4x] [--devices 1 8 64]

For each configs/<name>.py, the state's leaves from shapes alone (jax.eval_shape of its
initializer: nothing allocated, nothing compiled), grouped into params, Adam's moments, the
EMA and the rest (BatchNorm and spectral-norm state, standing statistics, step, rng), and the
bytes one device holds when every leaf is replicated and when `sharding.state_shardings`
splits the moments and the EMA over `--devices` devices. These are the state's share of the
update's per-device arguments (tests/test_state_sharding.py checks that the compiled
update's arguments shrink by exactly the split leaves' bytes). A few seconds.
"""

import argparse
import os
import sys

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
GROUPS = ("params", "opt_state", "ema", "other")


def _group(path) -> str:
  names = {getattr(key, "name", None) for key in path}
  return next((group for group in GROUPS[:3] if group in names), "other")


def state_bytes(name: str, devices: int) -> dict:
  """{group: (bytes per device replicated, bytes per device in the ZeRO layout)}."""
  from bigbigan import families, sharding  # pylint: disable=g-import-not-at-top
  from bigbigan.config_files import load_config  # pylint: disable=g-import-not-at-top
  config = load_config(os.path.join(REPO, "configs", f"{name}.py"))
  family = families.of(config)
  shapes = jax.eval_shape(family.state_initializer(config, family.build_networks(config)),
                          jax.random.PRNGKey(0))
  totals = {group: [0, 0] for group in GROUPS}
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    size = leaf.size * leaf.dtype.itemsize
    split = (sharding.is_split_field(path)
             and sharding.split_axis(leaf.shape, devices) is not None)
    totals[_group(path)][0] += size
    totals[_group(path)][1] += size // devices if split else size
  return {group: tuple(pair) for group, pair in totals.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="+", default=["resnet50", "revnet4x"])
  parser.add_argument("--devices", nargs="+", type=int, default=[1, 8, 64])
  args = parser.parse_args()
  gib = lambda b: f"{b / 2**30:.2f}"  # noqa: E731
  print("| config | devices | params | Adam moments | EMA | other | replicated (GiB) | "
        "ZeRO-1 (GiB) |")
  print("| --- " * 8 + "|")
  for name in args.configs:
    for devices in args.devices:
      found = state_bytes(name, devices)
      cells = [f"{gib(found[g][1])}" + ("" if found[g][0] == found[g][1] else
                                          f" (of {gib(found[g][0])})") for g in GROUPS]
      replicated = sum(pair[0] for pair in found.values())
      zero = sum(pair[1] for pair in found.values())
      print(f"| `{name}` | {devices} | " + " | ".join(cells) +
            f" | {gib(replicated)} | {gib(zero)} |")


if __name__ == "__main__":
  main()
