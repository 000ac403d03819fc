"""The first run: a small BigBiGAN on the MNIST sample that ships with the package, offline.

  python -m bigbigan.main --config=configs/quickstart.py --workdir=workdirs/quickstart

The networks and recipe of `configs/bigbigan_base.py:mnist` (BigGAN's G and BigBiGAN's
three-score D at 32 pixels with narrow widths, a stochastic ResNet-26 E at 64 pixels, one D
step per E/G step, E's learning rate 10x G's), trained for a few minutes on 6,000 MNIST
digits (bigbigan/data/mnist_sample/, read through the TFDS input pipeline like any
dataset). At the end it evaluates the EMA encoder, with its standing statistics, against the
same encoder at random initialisation: the paper's linear probe (fitted on 5,000 training
digits, early-stopped on 1,000, reported on the 1,000 test digits) and the cosine 1-NN; and
it writes the figure of data, samples and reconstructions. Expected runtime: under 5 minutes
on a 2-core CPU, compilation included.

Train on the whole of MNIST (prepared by `tfds build mnist`) with
`--config.data_dir=/path/to/tfds`, or use `configs/bigbigan_base.py:mnist`, the 40-minute
recipe (docs/benchmarks.md).
"""

import os

import ml_collections

from bigbigan.config_files import load_config
from bigbigan.data import samples


def get_config() -> ml_collections.ConfigDict:
  base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bigbigan_base.py")
  config = load_config(f"{base}:mnist")
  config.dataset = samples.MNIST_SAMPLE_DATASET
  config.data_dir = samples.MNIST_SAMPLE_DIR
  config.probe_train_split = config.knn_train_split = "train[1000:]"
  config.probe_train_val_split = "train[:1000]"
  config.eval_split = "test"
  config.total_steps = 700
  # An average over the last ~200 updates, started once the networks have left their
  # initialisation (before that the EMA would mostly be the random encoder).
  config.ema_decay = 0.995
  config.ema_start_step = 250
  config.standing_stats_batches = 8
  # One evaluation, at the end: the probe, 1-NN and the figures.
  config.eval_metrics = ("linear_probe", "knn", "reports")
  config.eval_every_steps = config.total_steps
  config.eval_every_steps_per_metric.reconstruction_labels = 0
  config.report_neighbour_pool = 1000
  config.log_every_steps = 100
  config.checkpoint_every_steps = config.total_steps
  return config
