"""The BigGAN generator (Brock et al. 2019), BigBiGAN's G, with presets by resolution.

    G = BigGANGenerator(resolution=128, ch=96, num_classes=0)   # BigBiGAN's single label
    images = G.apply(variables, z, train=False)                   # z [N, 120] -> [N, 128, 128, 3]

Hierarchical z: z is split into equal chunks, one for the first dense layer and one per
ResBlock; each block's BatchNorms are conditioned on its chunk concatenated with the shared
class embedding (BigBiGAN has no classes: one learned "single label" embedding). The channel
tables and the non-local block at 64x64 follow BigGAN's ImageNet architectures.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigbigan.models import layers

# Resolution -> the width after the dense layer and after each up ResBlock, in multiples
# of ch. The blocks double the resolution from 4x4.
GENERATOR_WIDTHS = {
    32: (4, 4, 4, 4),
    64: (16, 16, 8, 4, 2),
    128: (16, 16, 8, 4, 2, 1),
    256: (16, 16, 8, 8, 4, 2, 1),
}
BOTTOM_RESOLUTION = 4
ATTENTION_RESOLUTION = 64  # The non-local block follows the block that outputs 64x64.


def latent_chunks(resolution: int) -> int:
  """How many equal chunks z is split into: one for the dense layer, one per block."""
  return len(GENERATOR_WIDTHS[resolution])


class BigGANGenerator(nn.Module):
  """z [N, latent_dim] (and labels [N] if class-conditional) -> images [N, R, R, 3] in
  (-1, 1).

  Attributes:
    resolution: 32, 64, 128 or 256.
    ch: the channel multiplier (96 in BigGAN and BigBiGAN).
    num_classes: 0 for BigBiGAN's unconditional "single label" G; > 0 for class-conditional.
    shared_dim: the size of the shared class embedding.
    dtype: the compute dtype; params stay float32.
    remat: layers.REMAT_POLICIES: "blocks" recomputes each ResBlock's and the non-local
      block's activations in the backward pass instead of storing them.
  """

  resolution: int = 128
  ch: int = 96
  num_classes: int = 0
  shared_dim: int = 128
  dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, z: jax.Array, labels: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    widths = GENERATOR_WIDTHS[self.resolution]
    chunks = latent_chunks(self.resolution)
    if z.shape[-1] % chunks:
      raise ValueError(f"BigGAN at {self.resolution} pixels splits z into {chunks} equal "
                       f"chunks: latent_dim={z.shape[-1]} is not a multiple of {chunks}")
    kw = dict(dtype=self.dtype, param_dtype=jnp.float32)
    if self.num_classes and labels is None:
      raise ValueError("a class-conditional BigGAN generator needs labels")
    if not self.num_classes:
      labels = jnp.zeros(z.shape[:1], jnp.int32)  # The single label.
    embedding = nn.Embed(max(self.num_classes, 1), self.shared_dim,
                         embedding_init=layers.orthogonal, name="shared")(labels)
    z_chunks = jnp.split(z, chunks, axis=-1)

    width = widths[0] * self.ch
    h = layers.SNDense(BOTTOM_RESOLUTION * BOTTOM_RESOLUTION * width, **kw, name="dense")(
        z_chunks[0], train=train)
    h = h.reshape(-1, BOTTOM_RESOLUTION, BOTTOM_RESOLUTION, width)
    resolution = BOTTOM_RESOLUTION
    res_block = layers.rematerialised(layers.ResBlockUp, self.remat)
    non_local = layers.rematerialised(layers.NonLocalBlock, self.remat)
    for i, out_width in enumerate(widths[1:]):
      cond = jnp.concatenate([embedding, z_chunks[i + 1]], axis=-1)
      h = res_block(out_width * self.ch, **kw, name=f"block_{i}")(h, cond, train)
      resolution *= 2
      if resolution == ATTENTION_RESOLUTION:
        h = non_local(**kw, name="non_local")(h, train)
    h = nn.relu(layers.ConditionalBatchNorm(**kw, name="bn_out")(h, train=train))
    h = layers.SNConv(3, **kw, name="conv_out")(h, train=train)
    return jnp.tanh(h.astype(jnp.float32))
