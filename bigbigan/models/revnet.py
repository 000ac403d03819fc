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

Precision. F computes in `dtype` (bfloat16 for speed); the stream the units add to, and so
the recomputation x1 = y2 - F(y1), is float32. Rounded to bfloat16, x1 + F(x2) loses x1's
low bits for good, every recomputed input is off by bfloat16's precision, and the BatchNorms
of the units further back amplify that: RevNet-50's stages, each alone, gave gradients 1.7
to 2.5 times as far from float32's as plain bfloat16 backprop's (benchmarks/revnet_bf16.py).
With a float32 stream the inputs are recomputed to float32 rounding and the two bfloat16
gradients agree (ratio 1.000). It costs float32 for one tensor per stage (its output, kept
for the backward pass; with `reversible=False`, every stored stream activation) and for the
sums; F's layers read the float32 stream and compute in `dtype`. The channels that the
widening between stages pads with zeros are recomputed as exact zeros: as a difference they
would come back as rounding noise, which the first unit's BatchNorm multiplies by up to 1 /
sqrt(epsilon) (32) and which turns its ReLU at zero (where plain backprop passes no
gradient) on and off at random, even in float32.
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
    # The sum in the stream's dtype (float32), whatever F computed in.
    x = jnp.concatenate([x2, x1 + f.astype(x.dtype)], axis=-1)
    new_stats.append(updated)
  return x, tuple(new_stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def reversible_units(residual: ResidualFn, params: tuple, stats: tuple, x: jax.Array
                     ) -> tuple[jax.Array, tuple]:
  """The stage's units, with a backward pass that recomputes activations from the output."""
  return _run_units(residual, params, stats, x)


def zero_channels(x: jax.Array) -> jax.Array:
  """[C] bool: the channels of x [..., C] that are exactly zero everywhere."""
  return jnp.all(x == 0, axis=tuple(range(x.ndim - 1)))


def _reversible_forward(residual, params, stats, x):
  y, new_stats = _run_units(residual, params, stats, x)
  # The output, not the activations, is kept; and which input channels are zero ([C] bool).
  return (y, new_stats), (params, stats, y, zero_channels(x))


def _invert_unit(residual: ResidualFn, unit_params, unit_stats, y: jax.Array):
  """A unit's input recomputed from its output y = (x2, x1 + F(x2)), and F's pullback."""
  x2, y1 = jnp.split(y, 2, axis=-1)
  # F's output in the stream's dtype, as the forward added it (the cotangent too).
  f, pullback = jax.vjp(lambda p, v: residual(p, unit_stats, v)[0].astype(y.dtype),
                        unit_params, x2)
  x1 = y1 - f
  return jnp.concatenate([x1, x2], axis=-1), pullback


def _recomputed_inputs(residual: ResidualFn, params: tuple, stats: tuple, y: jax.Array,
                       zero: jax.Array):
  """Yields (a unit's input recomputed, F's pullback there), last unit first.

  `zero`: the stage input's all-zero channels. Unit 0 passes its input's second half on
  unchanged, so those channels are zero in unit 1's input's first half too; from unit 2 on
  every channel has had an F added. Known zeros are set exactly (see the module docstring).
  """
  half = zero.shape[0] // 2
  known_zero = (zero, jnp.concatenate([zero[half:], jnp.zeros_like(zero[half:])]))
  for unit in reversed(range(len(params))):
    y, pullback = _invert_unit(residual, params[unit], stats[unit], y)
    if unit < len(known_zero):
      y = jnp.where(known_zero[unit], jnp.zeros_like(y), y)
    yield y, pullback


def reconstruct_input(residual: ResidualFn, params: tuple, stats: tuple, y: jax.Array,
                      zero: jax.Array) -> jax.Array:
  """The stage's input as its reversible backward pass recomputes it from its output y.

  `zero`: `zero_channels` of the stage's input, which the forward pass records.
  """
  for y, _ in _recomputed_inputs(residual, params, stats, y, zero):
    pass
  return y


def _reversible_backward(residual, saved, cotangents):
  params, stats, y, zero = saved
  dy, _ = cotangents  # BatchNorm statistics are not differentiated.
  param_grads = []
  for _, pullback in _recomputed_inputs(residual, params, stats, y, zero):
    dx2_out, dy1 = jnp.split(dy, 2, axis=-1)
    d_params, dx2_through_f = pullback(dy1)
    dy = jnp.concatenate([dy1, dx2_out + dx2_through_f], axis=-1)
    param_grads.append(d_params)
  return tuple(reversed(param_grads)), jax.tree.map(jnp.zeros_like, stats), dy


reversible_units.defvjp(_reversible_forward, _reversible_backward)


def _residual_unit(channels: int, dtype: Any) -> Bottleneck:
  return Bottleneck(channels // 2, shortcut=False, dtype=dtype, parent=None)


def stage_residual(channels: int, dtype: Any, train: bool) -> ResidualFn:
  """F of a stage at `channels` channels, as a pure function of one unit's variables.

  A RevNetStage's params["unit_i"] and batch_stats["unit_i"] are that unit's variables;
  with `reconstruct_input` this recomputes a stage's input outside its backward pass.
  """
  unit = _residual_unit(channels, dtype)

  def residual(unit_params, unit_stats, x2):
    variables = {"params": unit_params, "batch_stats": unit_stats}
    if not train:
      return unit.apply(variables, x2, train=False), unit_stats
    out, mutated = unit.apply(variables, x2, train=True, mutable=["batch_stats"])
    return out, mutated["batch_stats"]

  return residual


class RevNetStage(nn.Module):
  """`units` reversible units at `channels` channels (F works at channels / 2)."""

  channels: int
  units: int
  reversible: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    # F, used as a pure function of explicit variables inside the custom_vjp.
    unit = _residual_unit(self.channels, self.dtype)
    half = jnp.zeros(x.shape[:-1] + (self.channels // 2,), self.dtype)
    init = lambda rng: unit.init(rng, half, train=False)
    params = tuple(self.param(f"unit_{i}", lambda rng: init(rng)["params"])
                   for i in range(self.units))
    stats = tuple(self.variable("batch_stats", f"unit_{i}",
                                lambda: init(jax.random.PRNGKey(0))["batch_stats"])
                  for i in range(self.units))
    residual = stage_residual(self.channels, self.dtype, train)
    # The stream in float32 (see the module docstring), in both modes, so that they compute
    # the same function; F's layers cast to `dtype` themselves.
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
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
