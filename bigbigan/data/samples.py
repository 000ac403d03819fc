"""Datasets that ship inside the package, for runs that must work offline.

`MNIST_SAMPLE_DIR` is a TFDS data_dir holding `mnist/3.0.1/`: the first 6,000 training and
1,000 test digits of MNIST, the records exactly as `tfds build mnist` writes them
(tools/make_mnist_sample.py). `tfds.builder("mnist", data_dir=MNIST_SAMPLE_DIR)` reads it as
any prepared dataset, through the same input pipeline (configs/quickstart.py).

MNIST is by Yann LeCun and Corinna Cortes, under CC BY-SA 3.0
(bigbigan/data/mnist_sample/README.md).
"""

import os

MNIST_SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_sample")
# The TFDS name and version of the sample (its directory mnist/3.0.1/).
MNIST_SAMPLE_DATASET = "mnist:3.0.1"
