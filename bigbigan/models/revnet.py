"""RevNet-50 (Gomez et al. 2017) with width multipliers, BigBiGAN's best encoder trunk.

    backbone = RevNet(depth=50, width=4)     # RevNet-50 x4: 8192 average-pooled features
    features = backbone.apply(variables, images, train=False)

A reversible unit splits its input's channels into halves (x1, x2) and outputs
(x2, x1 + F(x2)), F being the pre-activation bottleneck without its shortcut; its input
can be recomputed from its output: x1 = y2 - F(y1). With `reversible=True` each stage's
backward pass does exactly that (`jax.custom_vjp`), so a stage keeps only its output for the
backward pass, not its units' activations: activation memory no longer grows with depth.
Between stages, 2x2 average pooling and zero-padding the channels to twice as many, as in
the "Revisiting self-supervised" code that BigBiGAN's RevNets follow; then BatchNorm and
global average pooling.

BatchNorm inside F: the recomputation in the backward pass normalises with the same batch's
statistics, so it reproduces the forward exactly, and its running-average update is
discarded: the statistics are updated once per step, by the forward pass.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigbigan.models.resnet import STAGE_UNITS, Bottleneck, batch_norm, root

# (unit params, unit BN statistics, x2) -> (F(x2), the statistics after this call)
ResidualFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, Any]]


def _run_units(residual: ResidualFn, params: tuple, stats: tuple, x: jax.Array
               ) -> tuple[jax.Array, tuple]:
  new_stats = []
  for unit_params, unit_stats in zip(params, stats):
    x1, x2 = jnp.split(x, 2, axis=-1)
    f, updated = residual(unit_params, unit_stats, x2)
    x = jnp.concatenate([x2, x1 + f], axis=-1)
    new_stats.append(updated)
  return x, tuple(new_stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def reversible_units(residual: ResidualFn, params: tuple, stats: tuple, x: jax.Array
                     ) -> tuple[jax.Array, tuple]:
  """The stage's units, with a backward pass that recomputes activations from the output."""
  return _run_units(residual, params, stats, x)


def _reversible_forward(residual, params, stats, x):
  y, new_stats = _run_units(residual, params, stats, x)
  return (y, new_stats), (params, stats, y)  # The output, not the activations, is kept.


def _reversible_backward(residual, saved, cotangents):
  params, stats, y = saved
  dy, _ = cotangents  # BatchNorm statistics are not differentiated.
  param_grads = []
  for unit_params, unit_stats in zip(reversed(params), reversed(stats)):
    x2, y1 = jnp.split(y, 2, axis=-1)
    f, pullback = jax.vjp(lambda p, v: residual(p, unit_stats, v)[0], unit_params, x2)
    x1 = y1 - f  # The unit's input, recomputed.
    dx2_out, dy1 = jnp.split(dy, 2, axis=-1)
    d_params, dx2_through_f = pullback(dy1)
    dy = jnp.concatenate([dy1, dx2_out + dx2_through_f], axis=-1)
    y = jnp.concatenate([x1, x2], axis=-1)
    param_grads.append(d_params)
  return tuple(reversed(param_grads)), jax.tree.map(jnp.zeros_like, stats), dy


reversible_units.defvjp(_reversible_forward, _reversible_backward)


class RevNetStage(nn.Module):
  """`units` reversible units at `channels` channels (F works at channels / 2)."""

  channels: int
  units: int
  reversible: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    # F, used as a pure function of explicit variables inside the custom_vjp.
    unit = Bottleneck(self.channels // 2, shortcut=False, dtype=self.dtype, parent=None)
    half = jnp.zeros(x.shape[:-1] + (self.channels // 2,), self.dtype)
    init = lambda rng: unit.init(rng, half, train=False)
    params = tuple(self.param(f"unit_{i}", lambda rng: init(rng)["params"])
                   for i in range(self.units))
    stats = tuple(self.variable("batch_stats", f"unit_{i}",
                                lambda: init(jax.random.PRNGKey(0))["batch_stats"])
                  for i in range(self.units))

    def residual(unit_params, unit_stats, x2):
      variables = {"params": unit_params, "batch_stats": unit_stats}
      if not train:
        return unit.apply(variables, x2, train=False), unit_stats
      out, mutated = unit.apply(variables, x2, train=True, mutable=["batch_stats"])
      return out, mutated["batch_stats"]

    run = reversible_units if self.reversible else _run_units
    y, new_stats = run(residual, params, tuple(s.value for s in stats), x)
    if train and not self.is_initializing():
      for variable, value in zip(stats, new_stats):
        variable.value = value
    return y


def _pool_and_double_channels(x: jax.Array) -> jax.Array:
  x = nn.avg_pool(x, (2, 2), strides=(2, 2))
  pad = x.shape[-1] // 2
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad, pad)))


class RevNet(nn.Module):
  """images [N, H, W, 3] -> average-pooled features [N, 32 * base_width * width].

  `base_width` is 64 in RevNet-50 (stages of 256, 512, 1024 and 2048 channels at width 1);
  tests shrink it. `reversible=False` backpropagates through stored activations instead,
  for comparison.
  """

  depth: int = 50
  width: int = 1
  base_width: int = 64
  reversible: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    channels = 4 * self.base_width * self.width
    # The root convolution widens the image to the first stage's channels at once: a
    # reversible unit cannot change its width.
    x = root(x, channels, self.dtype)
    for stage, units in enumerate(STAGE_UNITS[self.depth]):
      if stage:
        x, channels = _pool_and_double_channels(x), channels * 2
      x = RevNetStage(channels, units, self.reversible, self.dtype, name=f"stage_{stage}")(
          x, train=train)
    x = batch_norm(train, self.dtype, "bn_out")(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


RevNet50 = functools.partial(RevNet, depth=50)  # width=1, 2 or 4: RevNet-50 x1, x2, x4.
# Test-only: the same structure, 16x narrower and shallower.
_TinyRevNet = functools.partial(RevNet, depth=26, base_width=4)
