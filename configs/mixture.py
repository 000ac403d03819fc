"""BiGAN / ALI / GAN on the ALI paper's 2-D mixture of 25 Gaussians (the offline default).

Command (the variant after the colon: bigan (default), ali, gan):

  python -m bigbigan.main --config=configs/mixture.py --workdir=/tmp/mixture
  python -m bigbigan.main --config=configs/mixture.py:ali --workdir=/tmp/mixture_ali

Expected runtime (one CPU core, including compilation and 4 evaluations): about 90 s for
bigan and ali, 60 s for gan. Measured results over 10 seeds (`python
benchmarks/mixture_modes.py --seeds 10 --jobs 2`) and the ALI paper's: docs/results.md, "Mode
coverage on the 25-Gaussian mixture".
"""

import ml_collections

VARIANTS = {
    # BiGAN: deterministic encoder.
    "bigan": "deterministic",
    # ALI: stochastic encoder z = mu(x) + sigma(x) * eps.
    "ali": "stochastic",
    # The plain GAN baseline: no encoder, D sees x alone.
    "gan": "none",
}


def get_config(variant: str = "bigan") -> ml_collections.ConfigDict:
  """Returns the mixture config for `variant` in VARIANTS."""
  if variant not in VARIANTS:
    raise ValueError(f"configs/mixture.py:{variant}: allowed variants {tuple(VARIANTS)}")
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = "mixture"
  config.mixture = ml_collections.ConfigDict(dict(
      modes_per_axis=5, spacing=2.0, std=0.05,  # means on {-4, -2, 0, 2, 4}^2
      num_train=100_000, num_eval=10_000, data_seed=0))

  config.latent_dim = 2
  config.latent_prior = "normal"
  config.network = "mlp"
  # Three hidden layers of 128 for every network; BiGAN's leaky ReLU (0.2) in E and D.
  config.generator = ml_collections.ConfigDict(dict(
      hidden_sizes=(128, 128, 128), activation="relu", batch_norm=False,
      output_activation="linear"))
  config.encoder = ml_collections.ConfigDict(dict(
      kind=VARIANTS[variant], hidden_sizes=(128, 128, 128), activation="leaky_relu",
      batch_norm=False, output_activation="linear"))
  config.discriminator = ml_collections.ConfigDict(dict(
      hidden_sizes=(128, 128, 128), activation="leaky_relu", batch_norm=False,
      r1_weight=0.0))

  # "adversarial" (BiGAN/ALI/GAN) or "autoencoder" (E and G on reconstruction alone).
  # "adversarial", "autoencoder", "latent_regressor" or "joint_latent_regressor".
  config.objective = "adversarial"
  config.reconstruction_loss = "l2"  # With objective="autoencoder": "l2" or "l1".
  config.joint_latent_regressor_weight = 0.25  # G's weight on JLR's regression loss.
  config.conditional = False  # Conditioning on labels needs a labelled dataset (MNIST).
  config.loss = "bigan"
  # Alternating updates reach sharp modes sooner than simultaneous ones here (docs/results.md,
  # "Mode coverage on the 25-Gaussian mixture").
  config.update_mode = "alternating"
  # The modes are 40x narrower than their spacing: D needs first-layer weights of order
  # 1/std to resolve them, and at the papers' 1e-4 to 2e-4 Adam takes far more steps to
  # grow them than a CPU-sized run has; 1e-3, decayed linearly to 1e-5 over the second
  # half, does (docs/results.md measures both).
  config.optimizer = ml_collections.ConfigDict(dict(
      generator_learning_rate=1e-3, discriminator_learning_rate=1e-3,
      encoder_learning_rate_multiplier=1.0, b1=0.5, b2=0.999, weight_decay=0.0,
      lr_decay_start_fraction=0.5, lr_decay_final_scale=0.01))

  # Evaluation and sampling use moving averages of G's and E's params with this decay
  # (0: the live params), which start averaging after ema_start_step.
  config.ema_decay = 0.0
  config.ema_start_step = 0
  config.batch_size = 128
  config.total_steps = 20_000
  config.log_every_steps = 500
  config.eval_metrics = ("mode_coverage",)  # bigbigan/evaluation/registry.py
  config.eval_every_steps = 5_000
  config.eval_every_steps_per_metric = ml_collections.ConfigDict({"mode_coverage": 0})
  config.checkpoint_every_steps = 5_000
  config.keep_checkpoints = 3
  # Where the checkpoints go: "" for <workdir>/checkpoints, or another directory (local or
  # gs://), e.g. a bucket in the accelerators' region while the logs go elsewhere.
  config.checkpoint_dir = ""
  config.eval_samples = 10_000
  return config
