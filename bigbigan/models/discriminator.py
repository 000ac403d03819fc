"""The BigBiGAN discriminator: F(x), H(z) and J(F, H), with scores s_x, s_z and s_xz.

    D = BigBiGANDiscriminator(resolution=128, ch=96)
    scores = D.apply(variables, x, z, train=False)   # {"x": [N], "z": [N], "xz": [N]}

F is BigGAN's discriminator trunk (ResBlocks down, non-local at 64x64, ReLU, global sum
pooling); H and J are MLPs with skip connections; linear heads give the unary scores
s_x = θ_x·F(x), s_z = θ_z·H(z) and the joint score s_xz = θ_xz·J(F(x), H(z)). The unary
switches drop s_x or s_z (the paper's ablations "x Unary Only", "z Unary Only" and, with
both off, "No Unaries (BiGAN)"). Without z (`z=None`) it is BigGAN's D, scoring x alone; with
`num_classes` > 0, s_x gains the class projection Embed(y)·F(x).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigbigan.models import layers

# Resolution -> (width in multiples of ch, whether it halves the resolution) per ResBlock.
DISCRIMINATOR_BLOCKS = {
    32: ((4, True), (4, True), (4, False), (4, False)),
    64: ((1, True), (2, True), (4, True), (8, True), (16, False)),
    128: ((1, True), (2, True), (4, True), (8, True), (16, True), (16, False)),
    256: ((1, True), (2, True), (4, True), (8, True), (8, True), (16, True), (16, False)),
}
ATTENTION_RESOLUTION = 64


class BigGANTrunk(nn.Module):
  """F: images [N, R, R, 3] -> features [N, width of the last block].

  `remat` (layers.REMAT_POLICIES): "blocks" recomputes each ResBlock's and the non-local
  block's activations in the backward pass instead of storing them.
  """

  resolution: int = 128
  ch: int = 96
  dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
    res_block = layers.rematerialised(layers.ResBlockDown, self.remat)
    non_local = layers.rematerialised(layers.NonLocalBlock, self.remat)
    h, resolution = x, self.resolution
    for i, (width, downsample) in enumerate(DISCRIMINATOR_BLOCKS[self.resolution]):
      h = res_block(width * self.ch, downsample=downsample, preactivation=i > 0, **kw,
                    name=f"block_{i}")(h, train)
      resolution //= 2 if downsample else 1
      if downsample and resolution == ATTENTION_RESOLUTION:
        h = non_local(**kw, name="non_local")(h, train)
    return jnp.sum(nn.relu(h), axis=(1, 2))  # Global sum pooling.


class SkipMLP(nn.Module):
  """`depth` spectral-normalised Dense layers of `width` units with skip connections: the
  first maps the input to `width`, each next one adds its output to its input."""

  width: int
  depth: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
    h = layers.SNDense(self.width, **kw, name="dense_0")(x, train=train)
    for i in range(1, self.depth):
      h = h + layers.SNDense(self.width, **kw, name=f"dense_{i}")(nn.relu(h), train=train)
    return nn.relu(h)


class BigBiGANDiscriminator(nn.Module):
  """(x, z) -> {"x": s_x, "z": s_z, "xz": s_xz}, each [N] (float32); the scores that the
  unary switches keep.

  Attributes:
    resolution, ch: F's preset (BigGAN's D at this resolution and channel multiplier).
    latent_width, latent_depth: H's MLP.
    joint_width, joint_depth: J's MLP.
    unary_x, unary_z: keep the unary scores s_x and s_z.
    num_classes: > 0 adds the class projection to s_x (BigGAN's conditional D).
    remat: F's rematerialisation policy (BigGANTrunk).
  """

  resolution: int = 128
  ch: int = 96
  latent_width: int = 2048
  latent_depth: int = 8
  joint_width: int = 2048
  joint_depth: int = 8
  unary_x: bool = True
  unary_z: bool = True
  num_classes: int = 0
  dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, x: jax.Array, z: Optional[jax.Array] = None,
               labels: Optional[jax.Array] = None, *, train: bool) -> dict[str, jax.Array]:
    # The scores are computed in float32 whatever the compute dtype: the hinge losses compare
    # them with 1, and bf16 keeps about 3 significant digits.
    head = lambda name: layers.SNDense(1, dtype=jnp.float32, param_dtype=jnp.float32,
                                       name=name)
    if z is None and not self.unary_x:
      raise ValueError("a discriminator of x alone (z=None) needs its unary x score")
    features = BigGANTrunk(self.resolution, self.ch, self.dtype, self.remat,
                           name="F")(x, train=train)
    scores = {}
    if self.unary_x:
      s_x = head("x_head")(features, train=train)[:, 0]
      if self.num_classes:
        if labels is None:
          raise ValueError("a class-conditional discriminator needs labels")
        class_vectors = layers.SNEmbed(self.num_classes, features.shape[-1],
                                       dtype=jnp.float32, param_dtype=jnp.float32,
                                       name="class_projection")(labels, train=train)
        s_x = s_x + jnp.sum(class_vectors * features.astype(jnp.float32), axis=-1)
      scores["x"] = s_x
    if z is not None:
      latent_features = SkipMLP(self.latent_width, self.latent_depth, self.dtype,
                                name="H")(z, train=train)
      if self.unary_z:
        scores["z"] = head("z_head")(latent_features, train=train)[:, 0]
      joint = SkipMLP(self.joint_width, self.joint_depth, self.dtype, name="J")(
          jnp.concatenate([features, latent_features], axis=-1), train=train)
      scores["xz"] = head("xz_head")(joint, train=train)[:, 0]
    return {name: score.astype(jnp.float32) for name, score in scores.items()}
