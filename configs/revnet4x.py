"""BigBiGAN with a RevNet-50 x4 encoder, the paper's best: Table 1's "RevNet x4 (↑E LR)" row,
Table 2's RevNet-50 x4.

Command (a TPU pod or GPU cluster: see launch/README.md; ImageNet prepared for TFDS):

  python -m bigbigan.main --config=configs/revnet4x.py --workdir=gs://bucket/revnet4x

configs/bigbigan_base.py's Base with a stochastic RevNet-50 x4 E (reversible backprop) on
256-pixel images, D at their 128-pixel average pool, and E's learning rate 10x G's.
500K iterations of batch 2048, as configs/resnet50.py: the paper's Table 2 evaluates the
models of Table 1's rows (its caption says so), so one run gives both; the paper's only
1M-step run is Table 3's last row (unconditional generation). Expected runtime:
launch/README.md ("Expected costs"); `python -m bigbigan.benchmark
--config=configs/revnet4x.py` measures the step on the hardware at hand. The paper's
figures: linear probe 60.2% top-1 on train_val (Table 1), 60.8% (avepool) / 61.3%
(BN+CReLU) on ImageNet validation (Table 2); IS 23.1, FID 28.5 (Table 1).

The paper's measures at the end (Table 1: train_val, Table 2: validation; see
docs/evaluation.md):

  python -m bigbigan.evaluate --workdir=gs://bucket/revnet4x \
      --metrics=linear_probe,knn,fid,is,reports \
      --inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth

Variant "tiny" (`--config=configs/revnet4x.py:tiny`): the same recipe with narrow networks
on MNIST (G 32 pixels, E 64), for a CPU.
"""

import os

import ml_collections

from bigbigan.config_files import load_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bigbigan_base.py")
  return load_config(f"{base}:revnet_x4_high_e_lr{',' + variant if variant else ''}")
