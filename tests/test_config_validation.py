"""Every unusable config value is refused with a one-line message naming the field."""

import subprocess
import sys

import pytest

from bigbigan.config_files import apply_overrides, load_config
from bigbigan.families import validate_config, validate_networks
from bigbigan.errors import ConfigError
from conftest import REPO


@pytest.mark.parametrize("overrides, message", [
    (dict(seed=-1), "config.seed=-1: must be an integer >= 0"),
    (dict(batch_size=-16), "config.batch_size=-16: must be a positive integer"),
    (dict(log_every_steps=0), "config.log_every_steps=0: must be a positive integer"),
    (dict(mixture__std=0.0), "config.mixture.std=0.0: must be a positive number"),
    (dict(mixture__num_train=8), "config.mixture.num_train=8 is smaller than config.batch_size"),
    (dict(optimizer__generator_learning_rate=0.0),
     "config.optimizer.generator_learning_rate=0.0: must be a positive number"),
    (dict(optimizer__b1=1.0), "config.optimizer.b1=1.0: must be in [0, 1)"),
    (dict(optimizer__lr_decay_start_fraction=1.5), "must be in [0, 1] (1 disables the decay)"),
    (dict(optimizer__lr_decay_final_scale=-0.1), "lr_decay_final_scale=-0.1: must be >= 0"),
    (dict(optimizer__weight_decay=-1e-5), "config.optimizer.weight_decay=-1e-05: must be >= 0"),
    (dict(discriminator__r1_weight=-1.0), "config.discriminator.r1_weight=-1.0: must be >= 0"),
    (dict(generator__hidden_sizes=()), "config.generator.hidden_sizes=(): must be a non-empty"),
    (dict(encoder__hidden_sizes=(16, 0)), "config.encoder.hidden_sizes=(16, 0): must be"),
    (dict(latent_prior="cauchy"), "config.latent_prior='cauchy' is unknown: allowed"),
    (dict(generator__activation="gelu"), "config.generator.activation='gelu' is unknown"),
    (dict(objective="vae"), "config.objective='vae' is unknown: allowed"),
    (dict(objective="autoencoder", reconstruction_loss="l3"),
     "config.reconstruction_loss='l3' is unknown: allowed ('l2', 'l1')"),
    (dict(dataset="imagenet"), "config.dataset='imagenet' is unknown: allowed ('mixture', 'mnist')"),
    (dict(conditional=True), "config.conditional=True needs a labelled dataset"),
    (dict(objective="latent_regressor", encoder__kind="none"),
     "config.objective='latent_regressor' needs an encoder"),
    (dict(joint_latent_regressor_weight=-0.5), "joint_latent_regressor_weight=-0.5: must be >= 0"),
    (dict(ema_decay=1.0), "config.ema_decay=1.0: must be in [0, 1)"),
    (dict(ema_start_step=-1), "config.ema_start_step=-1: must be an integer >= 0"),
    (dict(encoder__output_activation="relu"), "config.encoder.output_activation='relu' is unknown"),
])
def test_bad_values_are_refused(tiny_config, overrides, message):
  with pytest.raises(ConfigError) as error:
    validate_config(tiny_config("bigan", **overrides), num_devices=8)
  assert message in str(error.value)
  assert "\n" not in str(error.value)


def test_batch_must_divide_over_processes(tiny_config):
  with pytest.raises(ConfigError, match="does not divide over 3 processes"):
    validate_config(tiny_config("bigan", batch_size=16), num_devices=1, num_processes=3)


@pytest.mark.parametrize("variant", ["bigan", "gan", "lr", "jlr", "ae_l2", "ae_l1",
                                     "conditional", "bigan,fast", "lr,smoke"])
def test_shipped_mnist_variants_are_valid(variant):
  validate_config(load_config(f"{REPO}/configs/mnist_bigan.py:{variant}"), num_devices=8)


def test_mnist_variants_combine_one_model_and_one_schedule():
  with pytest.raises(ValueError, match="at most one of"):
    load_config(f"{REPO}/configs/mnist_bigan.py:lr,jlr")
  with pytest.raises(ValueError, match="at most one of"):
    load_config(f"{REPO}/configs/mnist_bigan.py:fast,paper")


@pytest.mark.parametrize("variant", ["bigan", "ali", "gan"])
def test_shipped_configs_are_valid(variant):
  config = load_config(f"{REPO}/configs/mixture.py:{variant}")
  validate_config(config, num_devices=8)  # Raises if anything is off.
  assert config.encoder.kind == {"bigan": "deterministic", "ali": "stochastic",
                                 "gan": "none"}[variant]


@pytest.mark.parametrize("variant", ["128", "conditional", "32,no_unaries", "256,bfloat16",
                                     "64,x_unary_only", "z_unary_only",
                                     "revnet50x4,deterministic"])
def test_biggan_network_configs_build_but_are_refused_for_training(variant):
  from bigbigan.families import bigbigan as bigbigan_family  # pylint: disable=g-import-not-at-top
  config = load_config(f"{REPO}/configs/biggan.py:{variant}")
  networks = bigbigan_family.build_networks(config)
  assert networks.discriminator.unary_x == ("z_unary_only" not in variant
                                            and "no_unaries" not in variant)
  with pytest.raises(ConfigError, match="has no training data: configs/biggan.py holds"):
    validate_config(config, num_devices=8)
  assert (networks.encoder is None) == (variant == "conditional")
  with pytest.raises(ValueError, match="at most one resolution"):
    load_config(f"{REPO}/configs/biggan.py:64,128")
  with pytest.raises(ValueError, match="none of these with 'conditional'"):
    load_config(f"{REPO}/configs/biggan.py:conditional,revnet50x4")


@pytest.mark.parametrize("spec", [
    *(f"bigbigan_base.py:{row}" for row in ("base", "deterministic", "uniform", "x_unary_only",
                                             "z_unary_only", "no_unaries", "small_g32",
                                             "small_g64", "no_encoder", "high_res_e",
                                             "low_res_g", "high_res_g", "resnet101",
                                             "resnet_x2", "revnet", "revnet_x2", "revnet_x4")),
    "resnet50.py", "revnet4x.py", "bigbigan_base.py:tiny", "resnet50.py:tiny",
    "revnet4x.py:tiny", "bigbigan_base.py:uniform,tiny", "bigbigan_base.py:mnist"])
def test_bigbigan_configs_are_valid(spec):
  config = load_config(f"{REPO}/configs/{spec}")
  validate_config(config, num_devices=8)
  tiny = spec.endswith(("tiny", "mnist"))
  assert config.dataset == ("mnist" if tiny else "imagenet2012")
  # Base: two D steps per E/G step; the CPU-sized tiny runs take one, and "mnist" the
  # smaller batch of its recipe search.
  batch_size = 16 if spec.endswith("mnist") else 32 if tiny else 2048
  assert config.batch_size == batch_size and config.d_steps == (1 if tiny else 2)


@pytest.mark.parametrize("spec, fields", [
    # Table 1's "ResNet (up E LR)" and "RevNet x4 (up E LR)": E at 256, D and G at 128.
    ("resnet50.py", dict(backbone="resnet", width=1, resolution=256, multiplier=10.0, g=128)),
    ("revnet4x.py", dict(backbone="revnet", width=4, resolution=256, multiplier=10.0, g=128)),
    ("bigbigan_base.py", dict(backbone="resnet", width=1, resolution=128, multiplier=1.0,
                              g=128)),
    ("bigbigan_base.py:low_res_g", dict(backbone="resnet", width=1, resolution=256,
                                        multiplier=1.0, g=64)),
    ("revnet4x.py:tiny", dict(backbone="revnet", width=4, resolution=64, multiplier=10.0,
                              g=32)),
])
def test_paper_rows(spec, fields):
  config = load_config(f"{REPO}/configs/{spec}")
  assert (config.encoder.backbone, config.encoder.width, config.encoder.resolution,
          config.optimizer.encoder_learning_rate_multiplier, config.resolution) == tuple(
              fields.values())


@pytest.mark.parametrize("overrides, message", [
    (dict(dataset="coco"), "config.dataset='coco' is unknown for BigBiGAN: allowed"),
    (dict(d_steps=0), "config.d_steps=0: must be a positive integer"),
    (dict(encoder__resolution=48), "config.encoder.resolution=48: D sees E's images"),
    (dict(batch_norm_scope="local"), "config.batch_norm_scope='local' is unknown"),
    (dict(num_classes=10), "config.num_classes=10: BigBiGAN trains unconditionally"),
    (dict(eval_features=("pixels",)), "config.eval_features=('pixels',): a non-empty tuple"),
    (dict(encoder__backbone="vit"), "config.encoder.backbone='vit' is unknown"),
    (dict(compute_dtype="float16"), "config.compute_dtype='float16' is unknown"),
    (dict(batch_size=60), "config.batch_size=60 does not divide over 8 devices"),
    (dict(cycle_x_weight=-1.0), "config.cycle_x_weight=-1.0: must be >= 0 (0 leaves the term"),
    (dict(cycle_z_weight=-0.5), "config.cycle_z_weight=-0.5: must be >= 0"),
    (dict(cycle_x_weight=0.1, encoder__kind="none"),
     "config.cycle_x_weight=0.1: the cycle terms need an encoder"),
    (dict(inception_batch_size=48), "config.inception_batch_size=48: 0 (each evaluation batch "
                                    "whole), or a divisor of config.eval_"
                                    "batch_size=512 that is a multiple of the 8 devices"),
    (dict(inception_batch_size=4), "config.inception_batch_size=4: 0 (each evaluation batch"),
    (dict(inception_batch_size=-8), "config.inception_batch_size=-8: 0 (each evaluation batch"),
])
def test_bad_bigbigan_values_are_refused(overrides, message):
  config = load_config(f"{REPO}/configs/bigbigan_base.py:tiny")
  config = apply_overrides(config, {k.replace("__", "."): v for k, v in overrides.items()})
  with pytest.raises(ConfigError) as error:
    validate_config(config, num_devices=8)
  assert message in str(error.value) and "\n" not in str(error.value)


def test_inception_batches_are_single_process_where_inception_runs():
  """config.inception_batch_size slices batches on the host: with FID (or IS) evaluated, more
  than one process is refused; without, the field is inert and the config is valid."""
  config = load_config(f"{REPO}/configs/bigbigan_base.py:mnist")
  assert config.inception_batch_size
  validate_config(config, num_devices=2, num_processes=2)
  config.eval_metrics = (*config.eval_metrics, "fid")
  validate_config(config, num_devices=2, num_processes=1)
  with pytest.raises(ConfigError) as error:
    validate_config(config, num_devices=2, num_processes=2)
  assert str(error.value) == ("config.inception_batch_size=8: Inception batches of their own "
                              "are for a single process (2 run); set it to 0")


@pytest.mark.parametrize("spec", ["biggan.py", "biggan.py:tiny", "biggan.py:conditional",
                                  "biggan.py:revnet50x4,tiny", "bigbigan_base.py:mnist",
                                  "mixture.py", "mnist_bigan.py"])
def test_network_configs_pass_the_network_checks(spec):
  validate_networks(load_config(f"{REPO}/configs/{spec}"))


@pytest.mark.parametrize("spec, overrides, message", [
    ("biggan.py:tiny", {"encoder.resolution": 48}, "config.encoder.resolution=48: D sees E's"),
    ("biggan.py:tiny", {"generator.ch": 0}, "config.generator.ch=0: must be a positive integer"),
    ("biggan.py", {"encoder.depth": 34}, "config.encoder.depth=34 is unknown"),
    ("biggan.py", {"optimizer.b2": 1.0}, "config.optimizer.b2=1.0: must be in [0, 1)"),
    ("mnist_bigan.py", {"encoder.hidden_sizes": (0,)}, "config.encoder.hidden_sizes=(0,)"),
])
def test_network_checks_refuse_bad_values_without_data_fields(spec, overrides, message):
  # configs/biggan.py has no data fields: these checks must not need them.
  config = apply_overrides(load_config(f"{REPO}/configs/{spec}"), overrides)
  with pytest.raises(ConfigError) as error:
    validate_networks(config)
  assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("tool", ["bigbigan.benchmark", "bigbigan.summary"])
def test_network_tools_refuse_a_bad_config_in_one_line(tool):
  result = subprocess.run([sys.executable, "-m", tool, "--config=configs/biggan.py:tiny",
                           "--config.encoder.resolution=48"], cwd=REPO, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 1 and not result.stdout
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"{tool}: error: config.encoder.resolution=48: D sees E's images")
