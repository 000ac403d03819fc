"""BigBiGAN with a ResNet-50 encoder: Table 1's "ResNet (↑E LR)" row, Table 2's ResNet-50.

Command (a TPU pod or GPU cluster: see launch/README.md; ImageNet prepared for TFDS):

  python -m bigbigan.main --config=configs/resnet50.py --workdir=gs://bucket/resnet50

configs/bigbigan_base.py's Base with E at 256 pixels (D sees their 2x2 average pool at 128)
and E's learning rate 10x G's (5e-4). 500K iterations of batch 2048. Expected runtime:
launch/README.md ("Expected costs"); `python -m bigbigan.benchmark
--config=configs/resnet50.py` measures the step on the hardware at hand. The paper's
figures: linear probe 53.7% top-1 on train_val (Table 1), 55.4% (avepool) / 56.6%
(BN+CReLU) on ImageNet validation (Table 2); IS 23.3, FID 28.5 (Table 1).

The paper's measures at the end (Table 1: train_val, Table 2: validation; see
docs/evaluation.md):

  python -m bigbigan.evaluate --workdir=gs://bucket/resnet50 \
      --metrics=linear_probe,knn,fid,is,reports \
      --inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth

Variant "tiny" (`--config=configs/resnet50.py:tiny`): the same recipe with narrow networks
on MNIST (G 32 pixels, E 64), for a CPU.
"""

import os

import ml_collections

from bigbigan.config_files import load_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bigbigan_base.py")
  return load_config(f"{base}:resnet_high_e_lr{',' + variant if variant else ''}")
