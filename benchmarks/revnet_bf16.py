"""RevNet-50's reversible backprop in bfloat16 compute: its gradient error, stage by stage.

    python benchmarks/revnet_bf16.py                          # at initialisation
    python benchmarks/revnet_bf16.py --noise_size 8 --residual_scale 0.01   # better conditioned

The full RevNet-50 structure (3, 4, 6 and 3 units per stage), narrowed so that it runs on a
CPU. One training-mode loss (BatchNorm on batch statistics, as in training), a fixed random
projection of the average-pooled features, is differentiated four ways:

- the reference: float32 compute, plain backprop (autodiff through stored activations);
- bfloat16 compute (params float32), plain backprop (`reversible=False`);
- bfloat16 compute, reversible backprop (each unit's input recomputed from its output);
- float32 compute, reversible backprop (a check: it should match the reference to ~1e-6).

For each stage (and the root convolution and the final BatchNorm, which see the gradient
after and before all the stages) it prints the relative error ||g - g_ref|| / ||g_ref|| of
the gradient with respect to that part's params, and the ratio reversible / plain in
bfloat16. Two more columns: ||g_rev - g_plain|| / ||g_plain - g_ref||, the error that
reversibility adds (both bfloat16 runs share the forward pass) next to the error bfloat16
brings anyway; and the relative error of the stage's input as the bfloat16 reversible
backward pass recomputes it from the stage's output.

A second table isolates each stage: the stage alone (its units, channels and resolution as
in the network; for stages 1-3 an input whose outer quarters of channels are zero, as the
widening between stages leaves them), the loss a fixed random projection of its output, and
the same columns for the gradient with respect to its params. Here nothing downstream
amplifies errors, so the stage's own behaviour shows.

Conditioning. At initialisation, with white-noise images, this loss's gradient is chaotic:
in float32, a 1e-5 relative change of the images moves the stages' gradients by 6-9%, so
every bfloat16 gradient is O(1) off and the ratio cannot tell errors apart (both sides
saturate near 1). `--noise_size` (images upsampled from noise at that size: smooth, so
that pooling keeps their scale) and `--residual_scale` (multiplies every unit's last
convolution: small residual branches, as in a zero-initialised-residual start) give a
regime where bfloat16 plain backprop errs by ~10% and differences show. Everything is
seeded; the same flags print the same table.
"""

import argparse
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigbigan.models import revnet
from bigbigan.models.resnet import STAGE_UNITS


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.asarray(leaf, np.float64).ravel()
                         for leaf in jax.tree.leaves(tree)])


def relative_error(tree, reference) -> float:
  """||tree - reference|| / ||reference||, all leaves together, in float64."""
  a, b = _flat(tree), _flat(reference)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def setup(seed: int, depth: int, base_width: int, image_size: int, batch: int,
          noise_size: int = 0, residual_scale: float = 1.0):
  """(variables, images, loss weights): a RevNet's variables and its inputs, all seeded.

  Images are standard normal noise at `noise_size` (0: `image_size`) pixels, bicubically
  upsampled and renormalised; every unit's conv_2 kernel is multiplied by `residual_scale`.
  """
  init_key, image_key, weight_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  noise_size = noise_size or image_size
  images = jax.random.normal(image_key, (batch, noise_size, noise_size, 3))
  if noise_size != image_size:
    images = jax.image.resize(images, (batch, image_size, image_size, 3), "bicubic")
    images = images / jnp.std(images)
  variables = revnet.RevNet(depth=depth, base_width=base_width).init(init_key, images,
                                                                     train=False)
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: v * residual_scale if "conv_2" in jax.tree_util.keystr(path) else v,
      variables)
  weights = jax.random.normal(weight_key, (batch, 32 * base_width))
  return variables, images, weights


def gradients(model: nn.Module, variables, images, weights):
  """d(sum(features * weights)) / d(params), BatchNorm in training mode."""
  # Everything as arguments, not constants: one compilation serves every seed and scale.
  def loss(params, variables, images, weights):
    features, _ = model.apply({**variables, "params": params}, images, train=True,
                              mutable=["batch_stats"])
    return jnp.sum(features * weights)
  return jax.jit(jax.grad(loss))(variables["params"], variables, images, weights)


def reconstruction_errors(model: nn.Module, variables, images) -> dict[str, float]:
  """Per stage: ||x' - x|| / ||x||, x' the stage's input recomputed from its output.

  The stages' inputs and outputs are captured from a training-mode forward pass; x' is what
  the reversible backward pass recomputes (`revnet.reconstruct_input`, with the same F).
  """
  def errors(variables, images):
    seen = {}

    def capture(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, revnet.RevNetStage) and context.method_name == "__call__":
        seen[context.module.name] = (context.module, args[0], out)
      return out

    with nn.intercept_methods(capture):
      model.apply(variables, images, train=True, mutable=["batch_stats"])
    result = {}
    for name, (stage, x, y) in seen.items():
      params, stats = variables["params"][name], variables["batch_stats"][name]
      units = [f"unit_{i}" for i in range(stage.units)]
      x_again = revnet.reconstruct_input(
          revnet.stage_residual(stage.channels, stage.dtype, train=True),
          tuple(params[u] for u in units), tuple(stats[u] for u in units), y,
          revnet.zero_channels(x))
      x = x.astype(jnp.float32)
      result[name] = jnp.linalg.norm((x_again - x).ravel()) / jnp.linalg.norm(x.ravel())
    return result
  return {k: float(v) for k, v in jax.jit(errors)(variables, images).items()}


def _stage_gradients(stage, variables, x, weights):
  def loss(params, variables, x, weights):
    y, _ = stage.apply({**variables, "params": params}, x.astype(stage.dtype), train=True,
                       mutable=["batch_stats"])
    return jnp.sum(y.astype(jnp.float32) * weights)
  return jax.jit(jax.grad(loss))(variables["params"], variables, x, weights)


def isolated_stages(seed: int, depth: int, base_width: int, image_size: int, batch: int,
                    residual_scale: float = 1.0):
  """Yields (stage, units, params, {(dtype, reversible): gradient}, reconstruction error)."""
  channels, side = 4 * base_width, image_size // 4
  for index, units in enumerate(STAGE_UNITS[depth]):
    if index:
      channels, side = channels * 2, side // 2
    keys = jax.random.split(jax.random.PRNGKey(seed + 1 + index), 3)
    # The widening between stages: the outer quarters of the channels are zeros.
    inner = channels // 2 if index else channels
    x = jax.random.normal(keys[0], (batch, side, side, inner))
    x = jnp.pad(x, ((0, 0),) * 3 + (((channels - inner) // 2,) * 2,))
    weights = jax.random.normal(keys[1], x.shape)
    variables = revnet.RevNetStage(channels, units).init(keys[2], x, train=False)
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: v * residual_scale if "conv_2" in jax.tree_util.keystr(path) else v,
        variables)
    grads = {(dtype.__name__, reversible): _stage_gradients(
                 revnet.RevNetStage(channels, units, reversible, dtype), variables, x, weights)
             for dtype in (jnp.float32, jnp.bfloat16) for reversible in (False, True)}

    def recompute(variables, x):
      stage = revnet.RevNetStage(channels, units, True, jnp.bfloat16)
      y, _ = stage.apply(variables, x.astype(jnp.bfloat16), train=True,
                         mutable=["batch_stats"])
      names = [f"unit_{i}" for i in range(units)]
      x_again = revnet.reconstruct_input(
          revnet.stage_residual(channels, jnp.bfloat16, train=True),
          tuple(variables["params"][u] for u in names),
          tuple(variables["batch_stats"][u] for u in names), y,
          revnet.zero_channels(x.astype(jnp.bfloat16)))
      x = x.astype(jnp.bfloat16).astype(jnp.float32)
      return jnp.linalg.norm((x_again - x).ravel()) / jnp.linalg.norm(x.ravel())
    count = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    yield f"stage_{index}", units, count, grads, float(jax.jit(recompute)(variables, x))


def _row(name, units, count, grads, reference, recon) -> str:
  err = {key: relative_error(g, reference) for key, g in grads.items()}
  plain, rev = err["bfloat16", False], err["bfloat16", True]
  added = (np.linalg.norm(_flat(grads["bfloat16", True]) - _flat(grads["bfloat16", False]))
           / np.linalg.norm(_flat(grads["bfloat16", False]) - _flat(reference)))
  recon = "-" if recon is None else f"{recon:.1e}"
  return (f"| {name} | {units} | {count:,} | {plain:.3f} | {rev:.3f} | {rev / plain:.3f} "
          f"| {added:.1e} | {err['float32', True]:.1e} | {recon} |")


HEADER = ("| stage | units | params | rel. error of bf16 plain backprop "
          "| rel. error of bf16 reversible backprop | ratio | bf16 rev - plain, / plain's error "
          "| rel. error of f32 reversible backprop | bf16 input reconstruction error |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--base_width", type=int, default=16,
                      help="64 in RevNet-50, 256 in RevNet-50 x4; 16: stages of 64 to 512 "
                           "channels")
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--noise_size", type=int, default=0,
                      help="images: noise at this size, upsampled (0: white noise)")
  parser.add_argument("--residual_scale", type=float, default=1.0,
                      help="multiplies every unit's last convolution (F's output) at init")
  args = parser.parse_args()
  # The tests' compilation cache, unless JAX_COMPILATION_CACHE_DIR names another: compiling
  # RevNet-50 four ways takes minutes on a CPU.
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(os.path.expanduser("~"), ".cache", "bigbigan-jax"))

  depth = 50
  make = lambda dtype, reversible: revnet.RevNet(  # noqa: E731
      depth=depth, base_width=args.base_width, reversible=reversible, dtype=dtype)
  variables, images, weights = setup(args.seed, depth, args.base_width, args.image_size,
                                     args.batch, args.noise_size, args.residual_scale)
  grads = {(dtype.__name__, reversible): gradients(make(dtype, reversible), variables, images,
                                                   weights)
           for dtype in (jnp.float32, jnp.bfloat16) for reversible in (False, True)}
  reference = grads["float32", False]
  reconstruction = reconstruction_errors(make(jnp.bfloat16, True), variables, images)

  print(f"RevNet-{depth}, base_width {args.base_width}, {args.image_size}x{args.image_size} "
        f"images (noise size {args.noise_size or args.image_size}), batch {args.batch}, "
        f"residual scale {args.residual_scale}, seed {args.seed}; jax {jax.__version__} on "
        f"{jax.devices()[0].device_kind}")
  print("\nThe whole network; each part's params' gradient:\n")
  print(HEADER)
  parts = [("root", "-")]
  parts += [(f"stage_{i}", str(units)) for i, units in enumerate(STAGE_UNITS[depth])]
  parts += [("bn_out", "-")]
  for name, units in parts:
    count = sum(leaf.size for leaf in jax.tree.leaves(reference[name]))
    print(_row(name, units, count, {key: g[name] for key, g in grads.items()},
               reference[name], reconstruction.get(name)), flush=True)

  print("\nEach stage alone, the loss on its output:\n")
  print(HEADER)
  for name, units, count, stage_grads, recon in isolated_stages(
      args.seed, depth, args.base_width, args.image_size, args.batch, args.residual_scale):
    print(_row(name, units, count, stage_grads, stage_grads["float32", False], recon),
          flush=True)


if __name__ == "__main__":
  main()
