"""BiGAN on permutation-invariant MNIST (BiGAN paper, appendix C.1), its Table 1 baselines
and a conditional BiGAN.

Commands (MNIST must be prepared for TFDS; see docs/data.md):

  python -m bigbigan.main --config=configs/mnist_bigan.py:fast --workdir=/tmp/mnist_fast
  python -m bigbigan.main --config=configs/mnist_bigan.py --workdir=/tmp/mnist_paper
  python -m bigbigan.main --config=configs/mnist_bigan.py:lr,fast --workdir=/tmp/mnist_lr
  python benchmarks/mnist_table1.py --schedule fast     # every Table 1 row, one by one

Variants, comma-separated: at most one model, "bigan" (the default), "gan" (the "D"
baseline: a GAN, whose discriminator's last hidden layer is the representation), "lr" and
"jlr" (latent regressors: a GAN, and E trained to predict z from G(z); JLR also trains G on
that loss), "ae_l2" and "ae_l1" (autoencoders: the same E and G, reconstruction loss only)
or "conditional" (G and D also see the one-hot label); and at most one schedule, "paper"
(the default), "fast" or "smoke".

The paper's networks: E, G and D have two hidden layers of 1024 units (parameter-free
BatchNorm on the second), leaky ReLU 0.2 in E and D, ReLU and a sigmoid output in G; D sees
z through a learned linear map at each layer. z ~ U(-1, 1)^50, and E's output is bounded to
(-1, 1) by a tanh as in the official code (which maps its outputs through a scaled sigmoid
for a uniform latent): unbounded (`--config.encoder.output_activation=linear`), E(x) can
drift outside the prior's support, where D tells real pairs from fake by |z| alone.

Schedules and expected runtimes on a 2-core CPU:
- "paper": Adam 2e-4, beta1 0.5, l2 weight decay 2.5e-5, batch 128, simultaneous updates
  with the "inverse" E/G objective, 400 epochs with the learning rate decayed linearly to 1%
  over the last 200; an evaluation every 10 epochs. About 31 s per epoch and 90 s per
  evaluation: about 4.5 hours.
- "fast": for runs of minutes on a CPU: batch 32 (4x the updates per epoch), an R1 penalty
  of weight 1 on D (D otherwise wins early and E's features stop improving), and evaluation
  on moving averages of E and G (decay 0.999, from the second epoch); 5 epochs, the learning
  rate decayed over the last half; evaluations after epochs 2, 4 and 5. 6 to 11 minutes per
  model.
- "smoke": 2 epochs of the paper's schedule with an evaluation after each (6 minutes).

Measured results: docs/results.md ("BiGAN's Table 1 on permutation-invariant MNIST", with
the paper's figures beside them) and docs/benchmarks.md ("MNIST BiGAN recipe search").
"""

import ml_collections

from bigbigan.config_files import epochs_to_steps

MNIST_TRAIN_EXAMPLES = 60_000


# Model variants (at most one) and schedule variants, combined with commas.
MODELS = ("bigan", "gan", "lr", "jlr", "ae_l2", "ae_l1", "conditional")
SCHEDULES = ("paper", "fast", "smoke")
VARIANTS = MODELS + SCHEDULES


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
  """Returns the MNIST config for comma-separated `variant`s of VARIANTS.

  "paper": BiGAN as above (the default); "smoke": 2 epochs; "ae_l2" / "ae_l1": the Table 1
  autoencoder baselines, the same E and G trained on the L2 / L1 reconstruction error alone.
  """
  variants = set(variant.split(","))
  if (not variants <= set(VARIANTS) or len(variants & set(MODELS)) > 1
      or len(variants & set(SCHEDULES)) > 1):
    raise ValueError(f"configs/mnist_bigan.py:{variant}: allowed variants {VARIANTS}, "
                     f"comma-separated, with at most one of {MODELS} and one of {SCHEDULES}")
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = "mnist"
  config.data_dir = ""  # "": TFDS's default, or $TFDS_DATA_DIR.
  config.train_split = "train"
  config.eval_split = "test"
  # An int draws a fixed pixel permutation (the result must not change); None: no permutation.
  config.pixel_permutation_seed = ml_collections.config_dict.placeholder(int)

  config.latent_dim = 50
  config.latent_prior = "uniform"
  config.network = "mlp"
  config.generator = ml_collections.ConfigDict(dict(
      hidden_sizes=(1024, 1024), activation="relu", batch_norm=True,
      output_activation="sigmoid"))
  config.encoder = ml_collections.ConfigDict(dict(
      kind="deterministic", hidden_sizes=(1024, 1024), activation="leaky_relu",
      batch_norm=True, output_activation="tanh"))
  config.discriminator = ml_collections.ConfigDict(dict(
      hidden_sizes=(1024, 1024), activation="leaky_relu", batch_norm=True, r1_weight=0.0))

  # "adversarial" (BiGAN/ALI/GAN) or "autoencoder" (E and G on reconstruction alone).
  # "latent_regressor" / "joint_latent_regressor": a GAN, and E regresses z from G(z).
  config.objective = "adversarial"
  config.reconstruction_loss = "l2"  # With objective="autoencoder": "l2" or "l1".
  for kind in ("l2", "l1"):
    if f"ae_{kind}" in variants:
      config.objective, config.reconstruction_loss = "autoencoder", kind
  if "gan" in variants:
    config.encoder.kind = "none"  # D's features are the representation.
  if variants & {"lr", "jlr"}:
    config.objective = "latent_regressor" if "lr" in variants else "joint_latent_regressor"
    # E's outputs are the logits of the sigmoid cross entropy against (z + 1) / 2.
    config.encoder.output_activation = "linear"
  # JLR: G also minimises this weight times the regression loss (the official code's 0.25).
  config.joint_latent_regressor_weight = 0.25
  # G and D also see the one-hot label; E does not.
  config.conditional = "conditional" in variants
  config.loss = "bigan"
  config.update_mode = "simultaneous"
  config.optimizer = ml_collections.ConfigDict(dict(
      generator_learning_rate=2e-4, discriminator_learning_rate=2e-4,
      encoder_learning_rate_multiplier=1.0, b1=0.5, b2=0.999, weight_decay=2.5e-5,
      lr_decay_start_fraction=0.5, lr_decay_final_scale=0.01))

  # Evaluation and sampling use moving averages of G's and E's params with this decay
  # (0: the live params), which start averaging after ema_start_step.
  config.ema_decay = 0.0
  config.ema_start_step = 0
  config.batch_size = 128
  epochs, eval_every_epochs = 400, 10
  if "smoke" in variants:
    epochs, eval_every_epochs = 2, 1
  if "fast" in variants:
    config.batch_size = 32
    config.discriminator.r1_weight = 1.0
    config.ema_decay = 0.999
    epochs, eval_every_epochs = 5, 2
  steps_per_epoch = epochs_to_steps(1, MNIST_TRAIN_EXAMPLES, config.batch_size)
  config.ema_start_step = steps_per_epoch if config.ema_decay else 0
  config.total_steps = epochs_to_steps(epochs, MNIST_TRAIN_EXAMPLES, config.batch_size)
  config.log_every_steps = 100
  config.eval_metrics = ("mnist_representation",)  # bigbigan/evaluation/registry.py
  config.eval_every_steps = steps_per_epoch * eval_every_epochs
  config.eval_every_steps_per_metric = ml_collections.ConfigDict({"mnist_representation": 0})
  config.checkpoint_every_steps = steps_per_epoch
  config.keep_checkpoints = 3
  # Where the checkpoints go: "" for <workdir>/checkpoints, or another directory (local or
  # gs://), e.g. a bucket in the accelerators' region while the logs go elsewhere.
  config.checkpoint_dir = ""
  config.eval_batch_size = 1000
  config.eval_linear_probe = True
  return config
