"""A model family written outside the package, as a new one would be: the MLP GAN with
its encoder's latent regression switched off, registered by one line in FAMILIES
(tests/test_families.py). It reuses the MLP family's parts; only its checks are its own."""

from bigbigan.errors import ConfigError
from bigbigan.families import bigan

eval_metrics = bigan.eval_metrics
build_networks = bigan.build_networks
state_initializer = bigan.state_initializer
make_update = bigan.make_update
make_data = bigan.make_data
make_predict_fns = bigan.make_predict_fns
example_inputs = bigan.example_inputs


def validate_config(config, num_devices: int, num_processes: int) -> None:
  if config.encoder.kind != "none":
    raise ConfigError("config.encoder.kind: this family trains a GAN without an encoder; "
                      "set it to 'none'")
  bigan.validate_config(config, num_devices, num_processes)
