"""BigBiGAN's encoder E: a ResNet or RevNet trunk and an MLP head that gives z.

    E = ImageEncoder(backbone="revnet", width=4)
    out = E.apply(variables, images, train=False, rngs={"latent": key})
    out["z_mean"], out["z_stdev"], out["z_sample"]  # [N, latent_dim]
    out["avepool_feat"], out["bn_crelu_feat"]  # [N, 8192], [N, 16384]

The outputs carry the names of the released BigBiGAN modules (TF Hub `encode`), so models
trained here are drop-in replacements: `avepool_feat` is the trunk's average-pooled features
and `bn_crelu_feat` those batch-normalised (no learned scale or offset) and passed through
CReLU, concat(relu(h), relu(-h)). The encoder's input resolution is its own (BigBiGAN feeds
E 256x256 images and D their 2x2 average-pooled 128x128 versions).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigbigan.models.resnet import ResNetV2
from bigbigan.models.revnet import RevNet

BACKBONES = ("resnet", "revnet")
LATENT_BOUNDS = ("none", "tanh")


class ImageEncoder(nn.Module):
  """images [N, R, R, 3] in [-1, 1] -> {"z_mean", "z_stdev", "z_sample", "avepool_feat",
  "bn_crelu_feat"}.

  Attributes:
    latent_dim: z's size (120 in BigBiGAN).
    backbone, depth, width, base_width: the trunk: "resnet" (ResNet v2) or "revnet", e.g.
      ResNet-50 or RevNet-50 x4; `base_width` (64) shrinks it for tests.
    reversible: the RevNet's memory-saving backward pass.
    head_width, head_depth: the MLP head: `head_depth` - 1 hidden layers of `head_width`
      units with skip connections, then the linear output layer(s).
    stochastic: z = mu + sigma * eps, sigma = softplus(sigma_hat), with eps ~ N(0, I) from
      the "latent" rng stream; otherwise z = mu, and no randomness is used. `z_stdev` is
      sigma, or zeros for a deterministic E.
    latent_bound: "tanh" squashes z (and its mean) into (-1, 1), the support of a uniform
      prior; "none" leaves it unbounded (a normal prior). `z_stdev` stays sigma, the spread
      before the squashing.
  """

  latent_dim: int = 120
  backbone: str = "resnet"
  depth: int = 50
  width: int = 1
  base_width: int = 64
  reversible: bool = True
  head_width: int = 4096
  head_depth: int = 4
  stochastic: bool = True
  latent_bound: str = "none"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               noise: Optional[jax.Array] = None) -> dict[str, jax.Array]:
    """`noise` [N, latent_dim]: the stochastic encoder's eps; None draws it from the "latent"
    rng stream (inference passes each image's own, bigbigan_predict.per_image_noise)."""
    if self.backbone == "resnet":
      trunk = ResNetV2(self.depth, self.width, self.base_width, self.dtype, name="trunk")
    else:
      trunk = RevNet(self.depth, self.width, self.base_width, self.reversible, self.dtype,
                     name="trunk")
    features = trunk(x, train=train)
    normalised = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                              momentum=0.99, epsilon=1e-3, name="bn_crelu")(features)
    bn_crelu = jnp.concatenate([nn.relu(normalised), nn.relu(-normalised)], axis=-1)

    dense = lambda size, name: nn.Dense(size, dtype=self.dtype, param_dtype=jnp.float32,
                                        name=name)
    h = dense(self.head_width, "head_0")(features)
    for i in range(1, self.head_depth - 1):
      h = h + dense(self.head_width, f"head_{i}")(nn.relu(h))
    h = nn.relu(h)
    # z's mean and scale in float32 whatever the compute dtype: D and G read z at full
    # precision, and the scale's softplus needs it near 0.
    latent = lambda name: nn.Dense(self.latent_dim, dtype=jnp.float32, param_dtype=jnp.float32,
                                   name=name)
    mean = latent("mean")(h)
    sample, scale = mean, jnp.zeros_like(mean)
    if self.stochastic:
      scale = nn.softplus(latent("scale")(h))
      if noise is None:
        noise = jax.random.normal(self.make_rng("latent"), mean.shape)
      sample = mean + scale * noise
    if self.latent_bound == "tanh":
      mean, sample = jnp.tanh(mean), jnp.tanh(sample)
    return {"z_mean": mean, "z_stdev": scale, "z_sample": sample, "avepool_feat": features,
            "bn_crelu_feat": bn_crelu}
