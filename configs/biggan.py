"""BigBiGAN's networks at ImageNet scale (and BigGAN's), to size runs with.

Commands (seconds on a CPU: shapes and XLA's cost analysis only, no weights allocated):

  python -m bigbigan.summary --config=configs/biggan.py              # BigBiGAN, ResNet-50 E
  python -m bigbigan.summary --config=configs/biggan.py:revnet50x4   # BigBiGAN's best E
  python -m bigbigan.summary --config=configs/biggan.py:conditional  # BigGAN, 1,000 classes

They print each network's parameter count and forward GFLOPs; the counts of every variant
are in docs/scaling.md ("Sizing the BigGAN and BigBiGAN networks"). By default: the unconditional
("single label") G with 120-d z; BigBiGAN's D, i.e. BigGAN's trunk F and the MLPs H(z) and
J(F, H) of 8 layers of 2,048 units with skip connections; and the stochastic ResNet-50 v2
encoder on 256-pixel images. With `:conditional`, G and D are BigGAN's at 128 pixels with
ch 96 (published: G 70.4M and D 88.0M parameters, BigGAN's Table 1).

Variants, comma-separated: a resolution of G and D ("32", "64", "128": the default, or
"256", whose z is 140-d: 20 per chunk as in BigGAN); an encoder ("resnet50": the default,
"revnet50x1", "revnet50x2", "revnet50x4", or "deterministic" for z = mu); "conditional"
(BigGAN: class-conditional G, no encoder, and a D of x alone with the class projection); the
BigBiGAN paper's unary ablations "x_unary_only", "z_unary_only" and "no_unaries";
"bfloat16" (compute dtype; params stay float32); "tiny" (the same networks, narrow and
shallow, G and D at 32 pixels and E at 64, batch 16: for CPU checks and
`python -m bigbigan.benchmark --config=configs/biggan.py:tiny`, about a minute on a CPU).

The update that trains them is bigbigan/families/bigbigan_update.py (its fields are
below). This file holds the networks and the update only; the trainable configs add the
data and the evaluation: configs/bigbigan_base.py (Table 1's rows), configs/resnet50.py
and configs/revnet4x.py.
"""

import ml_collections

RESOLUTIONS = ("32", "64", "128", "256")
ENCODERS = {"resnet50": ("resnet", 1), "revnet50x1": ("revnet", 1),
            "revnet50x2": ("revnet", 2), "revnet50x4": ("revnet", 4)}
UNARY_ABLATIONS = ("x_unary_only", "z_unary_only", "no_unaries")
VARIANTS = RESOLUTIONS + tuple(ENCODERS) + UNARY_ABLATIONS + (
    "conditional", "deterministic", "bfloat16", "tiny")


def get_config(variant: str = "128") -> ml_collections.ConfigDict:
  """Returns the networks' config for comma-separated `variant`s of VARIANTS."""
  variants = set(variant.split(","))
  conditional = "conditional" in variants
  if (not variants <= set(VARIANTS) or len(variants & set(RESOLUTIONS)) > 1
      or len(variants & set(ENCODERS)) > 1 or len(variants & set(UNARY_ABLATIONS)) > 1
      or (conditional and variants & (set(ENCODERS) | set(UNARY_ABLATIONS)
                                      | {"deterministic"}))):
    raise ValueError(f"configs/biggan.py:{variant}: allowed variants {VARIANTS}, "
                     "comma-separated, with at most one resolution, one encoder and one "
                     "unary ablation, and none of these with 'conditional' (no encoder)")
  config = ml_collections.ConfigDict()
  config.network = "biggan"
  (resolution,) = variants & set(RESOLUTIONS) or {"128"}
  config.resolution = int(resolution)  # G's output and D's input.
  # One 20-d chunk of z per ResBlock and one for the dense layer.
  config.latent_dim = 140 if config.resolution == 256 else 120
  config.latent_prior = "normal"
  config.num_classes = 1000 if conditional else 0
  config.compute_dtype = "bfloat16" if "bfloat16" in variants else "float32"
  # Rematerialisation of G's and D's residual and non-local blocks: "none" stores every
  # activation for backprop; "blocks" stores each block's input alone and recomputes the
  # rest in the backward pass (10% more FLOPs per full-size step, for a larger per-device
  # batch: `python -m bigbigan.benchmark --memory` predicts the memory of either).
  config.remat = "none"

  # BigGAN's orthogonal regularisation of G's weights, beta = 1e-4.
  config.generator = ml_collections.ConfigDict(dict(ch=96, shared_dim=128, ortho_weight=1e-4))
  (encoder,) = variants & set(ENCODERS) or {"resnet50"}
  backbone, width = ENCODERS[encoder]
  config.encoder = ml_collections.ConfigDict(dict(
      kind="none" if conditional else
      "deterministic" if "deterministic" in variants else "stochastic",
      backbone=backbone, depth=50, width=width, base_width=64, reversible=True,
      head_width=4096, head_depth=4, latent_bound="none",
      resolution=256))  # "High Res E": E sees 256 pixels, D their 2x2 average pool.
  # With an encoder, D judges (x, z) pairs with F, H and J; without, x alone (BigGAN's D).
  config.discriminator = ml_collections.ConfigDict(dict(
      ch=96, latent_width=2048, latent_depth=8, joint_width=2048, joint_depth=8,
      unary_x="z_unary_only" not in variants and "no_unaries" not in variants,
      unary_z="x_unary_only" not in variants and "no_unaries" not in variants))

  # The update (families/bigbigan_update.py), with BigGAN's optimiser settings: Adam with beta1 0,
  # G 5e-5 (E the same times the multiplier), D 2e-4, two D steps per E/G step.
  config.batch_size = 2048  # The global batch of each D step and of the E/G step.
  # Gradient accumulation: each step's batch runs as this many micro-batches (of batch_size /
  # accumulation_steps, split over all devices) before one optimizer update, so activation
  # memory falls with the micro-batch. BatchNorm normalises each micro-batch by its own
  # statistics (families/bigbigan_update.py); 1: the whole batch at once.
  config.accumulation_steps = 1
  # BatchNorm statistics over the "global" batch (as BigGAN) or "per_device".
  config.batch_norm_scope = "global"
  config.d_steps = 2
  # ALICE's explicit cycle terms (Li et al. 2017), added to the E/G loss; 0 leaves the
  # paper's objective. cycle_x_weight * ||x - G(E(x))||_1 at D's resolution, from E's
  # z_sample, and cycle_z_weight * ||z - E(G(z))||_1 on E's z_mean (G(z) repeated 2x2 up to
  # E's resolution where E sees more pixels than D); each L1 norm is per example, averaged
  # over the batch.
  config.cycle_x_weight = 0.0
  config.cycle_z_weight = 0.0
  # A learning-rate decay (lr_decay_start_fraction < 1) is laid out in iterations for all
  # three networks: D's schedule advances once per iteration, not per D step.
  config.optimizer = ml_collections.ConfigDict(dict(
      generator_learning_rate=5e-5, discriminator_learning_rate=2e-4,
      encoder_learning_rate_multiplier=1.0, b1=0.0, b2=0.999, weight_decay=0.0,
      lr_decay_start_fraction=1.0, lr_decay_final_scale=1.0))
  config.total_steps = 500_000
  config.ema_decay = 0.9999
  config.ema_start_step = 20_000
  # BigGAN's standing statistics: evaluation, export and sampling run the EMA networks with
  # BatchNorm statistics averaged over this many training-mode forwards of theirs (G on
  # prior samples, E on training images, batch_size each), recomputed before every
  # evaluation and checkpoint; 0 runs them with the live networks' running averages.
  config.standing_stats_batches = 16
  if "tiny" in variants:
    _shrink(config)
  return config


def _shrink(config: ml_collections.ConfigDict) -> None:
  """The same networks, narrow and shallow: a CPU step in well under a second."""
  config.resolution, config.latent_dim, config.batch_size = 32, 64, 16
  config.generator.ch = config.discriminator.ch = 4
  for mlp in ("latent", "joint"):
    config.discriminator[f"{mlp}_width"], config.discriminator[f"{mlp}_depth"] = 64, 2
  config.encoder.update(dict(depth=26, base_width=8, head_width=64, head_depth=2,
                             resolution=64))
  config.ema_start_step = 0
