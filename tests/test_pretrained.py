"""Pretrained bundles: `bigbigan.export` -> `bigbigan.load` gives the trained EMA networks
exactly; corrupt, foreign and unfinished bundles and bad inputs are refused by name."""

import json
import shutil
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import pytest
from etils.epath import gpath
from etils.epath import testing as epath_testing

import bigbigan
from bigbigan import bundle, export, losses, pretrained, sharding
from bigbigan.errors import BundleError, ConfigError, InputError
from bigbigan.families import bigbigan as bigbigan_family
from bigbigan.families.bigbigan_predict import per_image_noise
from bigbigan.families.common import normalise_images, sample_prior
from bigbigan.state import inference_params
from conftest import REPO

OUTPUTS = ("z_mean", "z_stdev", "z_sample", "avepool_feat", "bn_crelu_feat")


@pytest.fixture(scope="module")
def model(tiny_bundle):
  return bigbigan.load(str(tiny_bundle["bundle"]))


def _images(n, side=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _reference(tiny_bundle):
  """The trained state's evaluation-mode networks, as the evaluation suite runs them."""
  config, mesh = tiny_bundle["config"], sharding.make_mesh()
  fns = bigbigan_family.make_predict_fns(config, bigbigan_family.build_networks(config), mesh)
  to_devices = lambda a: jax.device_put(a, sharding.batch_sharded(mesh))  # noqa: E731
  return fns, to_devices, jax.jit(normalise_images)


def test_load_encodes_bit_identically_to_the_trained_ema_encoder(tiny_bundle, model):
  fns, to_devices, normalise = _reference(tiny_bundle)
  state, images = tiny_bundle["state"], _images(16)
  expected = fns.encode(state, normalise(to_devices(images)))
  got = model.encode(images)
  assert set(got) == set(OUTPUTS)
  for name in OUTPUTS:
    np.testing.assert_array_equal(got[name], np.asarray(expected[name]), err_msg=name)
  z = got["z_mean"]
  np.testing.assert_array_equal(model.generate(z),
                                np.asarray(fns.generate(state, to_devices(z))))
  scores = fns.discriminate(state, normalise(to_devices(images)), to_devices(z))
  got_scores = model.discriminate(images, z)
  assert set(got_scores) == {"score_xz", "score_x", "score_z"}
  for name, score in scores.items():
    np.testing.assert_array_equal(got_scores[f"score_{name}"], np.asarray(score))
  # The EMA weights with their standing statistics, not the live weights nor the live
  # BatchNorm averages (the fixture moved all three apart).
  for other in (state.replace(ema=None), state.replace(standing_stats=None)):
    other_z = fns.encode(other, normalise(to_devices(images)))["z_mean"]
    assert not np.allclose(np.asarray(other_z), z, rtol=1e-3, atol=1e-4)
  assert model.step == tiny_bundle["step"]


def test_bundle_holds_the_config_weights_and_a_readme(tiny_bundle):
  manifest = json.loads((tiny_bundle["bundle"] / bundle.MANIFEST).read_text())
  state = tiny_bundle["state"]
  assert manifest["format"] == bundle.FORMAT and manifest["format_version"] == 1
  assert manifest["step"] == tiny_bundle["step"]
  assert manifest["bigbigan_version"] == bigbigan.__version__
  assert manifest["config"] == json.loads(tiny_bundle["config"].to_json_best_effort())
  for name in ("encoder", "generator"):
    count = sum(np.size(v) for v in jax.tree.leaves(inference_params(state, name)))
    assert manifest["networks"][name]["parameters"] == count
  readme = (tiny_bundle["bundle"] / bundle.README).read_text()
  assert f"bigbigan.load(\"{tiny_bundle['bundle']}\")" in readme and manifest["checksum"] in readme


def test_z_sample_is_z_mean_plus_z_stdev_times_the_images_noise(model):
  """The stochastic head's spread: z_sample - z_mean is z_stdev times each image's own
  noise (per_image_noise of its pixels and the seed), computed here independently."""
  images = _images(8)
  encoded = model.encode(images, seed=3)
  assert encoded["z_stdev"].shape == encoded["z_mean"].shape
  assert encoded["z_stdev"].min() > 0
  noise = np.asarray(per_image_noise(normalise_images(images), model.latent_dim, 3))
  np.testing.assert_allclose(encoded["z_sample"],
                             encoded["z_mean"] + encoded["z_stdev"] * noise, rtol=1e-5,
                             atol=1e-6)


def test_generate_upsamples_by_repeating_each_pixel(model):
  z = model.sample_latents(5, seed=1)
  images, upsampled = model.generate(z, upsample=True)
  np.testing.assert_array_equal(images, model.generate(z))
  assert upsampled.shape == (5, 2 * model.resolution, 2 * model.resolution, 3)
  for dy in (0, 1):
    for dx in (0, 1):
      np.testing.assert_array_equal(upsampled[:, dy::2, dx::2], images)


def test_sample_latents_draws_the_prior_or_its_truncation(tiny_bundle, model):
  prior = tiny_bundle["config"].latent_prior
  key = jax.random.PRNGKey(4)
  np.testing.assert_array_equal(model.sample_latents(300, seed=4),
                                np.asarray(sample_prior(key, (300, model.latent_dim), prior)))
  truncated = model.sample_latents(300, truncation=0.5, seed=4)
  np.testing.assert_array_equal(
      truncated, np.asarray(sample_prior(key, (300, model.latent_dim), prior, 0.5)))
  assert truncated.dtype == np.float32 and np.abs(truncated).max() <= 0.5
  for bad in ({"n": 0}, {"n": 4, "truncation": 0.0}, {"n": 4, "truncation": -1.0}):
    with pytest.raises(InputError):
      model.sample_latents(**bad)


def test_losses_equal_score_losses_on_the_same_scores(model):
  """model.losses against losses.score_losses on D's scores of (x, E(x)'s z_sample) and
  (G(z), z), gathered here through the public calls."""
  images, z = _images(12), model.sample_latents(7, seed=2)
  got = model.losses(images, z, seed=5)
  names = {v: k for k, v in pretrained.SCORE_NAMES.items()}
  rename = lambda scores: {names[k]: v for k, v in scores.items()}  # noqa: E731
  real = rename(model.discriminate(images, model.encode(images, seed=5)["z_sample"]))
  fake = rename(model.discriminate(model.generate(z), z))
  d_loss, eg_loss = losses.score_losses(real, fake)
  np.testing.assert_allclose(got["discriminator"], float(d_loss), rtol=1e-6)
  np.testing.assert_allclose(got["encoder_generator"], float(eg_loss), rtol=1e-6)
  np.testing.assert_allclose(got["encoder"] + got["generator"], got["encoder_generator"],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["encoder"], sum(np.mean(s) for s in real.values()),
                             rtol=1e-5, atol=1e-6)
  # Without z: as many prior samples as images, drawn with the seed.
  assert model.losses(images, seed=5) == model.losses(
      images, model.sample_latents(12, seed=5), seed=5)


def test_reconstruct_uses_z_sample_by_default(model):
  images = _images(4)
  encoded = model.encode(images)
  np.testing.assert_array_equal(model.reconstruct(images),
                                model.generate(encoded["z_sample"]))
  np.testing.assert_array_equal(model.reconstruct(images, use_sample=False),
                                model.generate(encoded["z_mean"]))


def test_signatures_give_the_shapes_and_dtypes_the_calls_return(model):
  """Every listed output against the call's actual output for a batch of 3."""
  images, z = _images(3), model.sample_latents(3)
  actual = {
      "encode": model.encode(images),
      "generate": dict(zip(("images", "upsampled (upsample=True)"),
                           model.generate(z, upsample=True))),
      "reconstruct": {"images": model.reconstruct(images)},
      "sample_latents": {"z": z},
      "discriminate": model.discriminate(images, z),
  }
  signatures = model.signatures()
  assert set(signatures) == set(actual) | {"losses"}
  for call, outputs in actual.items():
    listed = signatures[call]["outputs"]
    assert set(listed) == set(outputs), call
    for name, value in outputs.items():
      shape, dtype, _ = listed[name]
      assert tuple(3 if d in ("N", "n") else d for d in shape) == value.shape, (call, name)
      assert np.dtype(dtype) == value.dtype, (call, name)
  assert set(signatures["losses"]["outputs"]) == set(model.losses(images))
  text = model.describe()
  for call in signatures:
    assert f"\n{call}:" in text
  assert "z_stdev" in text and "[N, 64]" in text


def test_uint8_and_float_images_give_the_same_features(model):
  images = _images(8)
  from_uint8 = model.encode(images)
  # The float images the model makes of uint8 ones: bit for bit the same features.
  normalised = np.asarray(jax.jit(normalise_images)(images))
  exact = model.encode(normalised)
  # x / 127.5 - 1 in NumPy rounds some pixels differently in the last bit.
  numpy_float = model.encode(images.astype(np.float32) / 127.5 - 1.0)
  grayscale = model.encode(images[..., :1])
  for name in OUTPUTS:
    np.testing.assert_array_equal(exact[name], from_uint8[name])
    np.testing.assert_allclose(numpy_float[name], from_uint8[name], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(grayscale["z_mean"], model.encode(
      np.repeat(images[..., :1], 3, axis=-1))["z_mean"])


def test_batch_sizes_1_7_and_64_give_the_same_per_image_results(tiny_bundle, model):
  images = _images(64, seed=1)
  whole = model.encode(images)
  sevens = [model.encode(images[i:i + 7]) for i in range(0, 64, 7)]
  chunked = pretrained.load(str(tiny_bundle["bundle"]), max_batch_size=8).encode(images)
  ones = [model.encode(images[i:i + 1]) for i in (0, 33, 63)]
  for name in OUTPUTS:
    # Same noise per image; the kernels may round differently at other batch sizes.
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # noqa: E731
    close(np.concatenate([s[name] for s in sevens]), whole[name])
    close(chunked[name], whole[name])
    for i, one in zip((0, 33, 63), ones):
      close(one[name], whole[name][i:i + 1])
  assert np.abs(whole["z_sample"] - whole["z_mean"]).min() > 0  # z_sample is a sample.
  assert not np.allclose(model.encode(images, seed=1)["z_sample"], whole["z_sample"])


def test_other_sizes_are_resized_to_the_encoders_resolution(model):
  features = model.encode(_images(3, side=28))
  assert features["z_mean"].shape == (3, model.latent_dim)
  assert model.reconstruct(_images(3, side=28)).shape == (3, 32, 32, 3)


def test_a_photo_is_framed_as_the_pipeline_frames_it(model):
  # A 500x375 landscape photo: its central square, resized, as ImageNet's evaluation
  # preprocessing makes it (data/images.py), gives the features of the photo itself.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bigbigan.data import images as image_data  # pylint: disable=g-import-not-at-top
  rows, columns = np.mgrid[0:375, 0:500]
  smooth = np.stack([rows / 375, columns / 500, (rows + columns) / 875], -1) * 255
  photo = np.clip(smooth + np.random.default_rng(0).normal(0, 20, smooth.shape), 0, 255)
  photo = photo.astype(np.uint8)
  preprocess = image_data.image_preprocess("imagenet2012", model.encoder_resolution,
                                          train=False)
  framed = preprocess({"image": tf.constant(photo), "label": tf.constant(0)})["image"].numpy()
  got, expected = model.encode(photo[None]), model.encode(framed[None])
  for name in ("z_mean", "avepool_feat", "bn_crelu_feat"):  # z_sample's noise is per image.
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
  # Squashing the whole photo instead of framing it would not do.
  squashed = model.encode(np.asarray(tf.cast(tf.round(tf.image.resize(
      photo, (model.encoder_resolution,) * 2, "bicubic", antialias=True)), tf.uint8))[None])
  assert not np.allclose(squashed["z_mean"], expected["z_mean"], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("images, message", [
    (np.zeros((32, 32, 3), np.uint8), r"\[N, H, W, 3\].*one image: pass images\[None\]"),
    (np.zeros((2, 32, 32, 2), np.uint8), r"\[N, H, W, 3\]"),
    (np.zeros((0, 32, 32, 3), np.uint8), "non-empty"),
    (np.full((2, 32, 32, 3), 255.0, np.float32), r"must be in \[-1, 1\], got \[255, 255\]"),
    (np.full((2, 32, 32, 3), np.nan, np.float32), "NaN"),
    (np.zeros((2, 32, 32, 3), np.int32), "dtype int32: pass uint8"),
])
def test_wrong_images_are_refused_with_their_message(model, images, message):
  with pytest.raises(InputError, match=message):
    model.encode(images)


def test_wrong_latents_are_refused(model):
  with pytest.raises(InputError, match=r"z must be a non-empty batch \[N, 64\]"):
    model.generate(np.zeros((2, 10), np.float32))
  with pytest.raises(InputError, match="same number of rows"):
    model.discriminate(_images(2), np.zeros((3, 64), np.float32))


def _copy(tiny_bundle, tmp_path):
  copy = tmp_path / "bundle"
  shutil.copytree(tiny_bundle["bundle"], copy)
  return copy


def test_a_flipped_byte_is_refused_as_corrupt(tiny_bundle, tmp_path):
  copy = _copy(tiny_bundle, tmp_path)
  data = bytearray((copy / bundle.WEIGHTS).read_bytes())
  data[len(data) // 2] ^= 0x01
  (copy / bundle.WEIGHTS).write_bytes(bytes(data))
  with pytest.raises(BundleError, match="is corrupt: its content does not match its checksum"):
    bigbigan.load(str(copy))
  # A changed config value in the manifest is content too.
  manifest = json.loads((tiny_bundle["bundle"] / bundle.MANIFEST).read_text())
  manifest["config"]["latent_dim"] = 65
  (copy / bundle.WEIGHTS).write_bytes((tiny_bundle["bundle"] / bundle.WEIGHTS).read_bytes())
  (copy / bundle.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(BundleError, match="checksum"):
    bigbigan.load(str(copy))


def test_another_format_version_is_refused(tiny_bundle, tmp_path):
  copy = _copy(tiny_bundle, tmp_path)
  manifest = json.loads((copy / bundle.MANIFEST).read_text())
  manifest["format_version"] = 2
  (copy / bundle.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(BundleError, match="has format version 2 .* reads version 1: export it again"):
    bigbigan.load(str(copy))


def test_weights_that_do_not_fit_the_config_are_refused(tiny_bundle, tmp_path):
  """A bundle whose networks differ from what its config builds (another code version):
  the checksum holds, the shapes do not."""
  copy = _copy(tiny_bundle, tmp_path)
  manifest = json.loads((copy / bundle.MANIFEST).read_text())
  manifest["config"]["encoder"]["head_width"] = 48
  manifest["checksum"] = bundle.checksum(manifest, (copy / bundle.WEIGHTS).read_bytes())
  (copy / bundle.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(BundleError, match="weights do not fit its config .*head_0.* export it"):
    bigbigan.load(str(copy))


def test_missing_and_unfinished_bundles_are_refused(tiny_bundle, tmp_path):
  with pytest.raises(BundleError, match="not found"):
    bigbigan.load(str(tmp_path / "nowhere"))
  copy = _copy(tiny_bundle, tmp_path)
  (copy / bundle.MANIFEST).unlink()
  with pytest.raises(BundleError, match="not a bigbigan bundle .*unfinished export"):
    bigbigan.load(str(copy))


def test_bundle_without_discriminator(tiny_bundle, tmp_path, model):
  out = tmp_path / "encoder_only"
  manifest = export.export_run(str(tiny_bundle["workdir"]), str(out))
  assert set(manifest["networks"]) == {"encoder", "generator"}
  small = bigbigan.load(str(out))
  np.testing.assert_array_equal(small.encode(_images(8))["avepool_feat"],
                                model.encode(_images(8))["avepool_feat"])
  for call in (lambda: small.discriminate(_images(8), np.zeros((8, 64), np.float32)),
               lambda: small.losses(_images(8))):
    with pytest.raises(InputError, match="--with_discriminator"):
      call()
  assert set(small.signatures()) == set(model.signatures()) - {"discriminate", "losses"}


def _export(*flags):
  return subprocess.run([sys.executable, "-m", "bigbigan.export", *flags], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_export_command_writes_and_never_clobbers(tiny_bundle, tmp_path):
  out, workdir = tmp_path / "cli", str(tiny_bundle["workdir"])
  done = _export(f"--workdir={workdir}", f"--out={out}")
  assert done.returncode == 0, done.stderr[-2000:]
  assert f"Exported step {tiny_bundle['step']}" in done.stdout
  before = (out / bundle.WEIGHTS).read_bytes()
  refused = _export(f"--workdir={workdir}", f"--out={out}")
  assert refused.returncode == 1
  last_line = refused.stderr.strip().splitlines()[-1]
  assert last_line.startswith(f"bigbigan: error: {out} exists: pass --overwrite")
  assert (out / bundle.WEIGHTS).read_bytes() == before
  manifest = export.export_run(workdir, str(out), overwrite=True, with_discriminator=True)
  assert json.loads((out / bundle.MANIFEST).read_text()) == manifest
  assert "discriminator" in manifest["networks"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]  # No staging left behind.
  with pytest.raises(ConfigError, match="config.json not found"):
    export.export_run(str(tmp_path / "no_run"), str(tmp_path / "x"))
  with pytest.raises(BundleError, match="is not a bundle .it holds cli.* left untouched"):
    export.export_run(workdir, str(tmp_path), overwrite=True)
  assert (out / bundle.WEIGHTS).exists()
  # What an interrupted export to an object store leaves (no manifest) may be replaced.
  (out / bundle.MANIFEST).unlink()
  export.export_run(workdir, str(out), overwrite=True)
  assert bigbigan.load(str(out)).step == tiny_bundle["step"]


@pytest.mark.slow
def test_gs_bundles_are_written_manifest_last_and_load(tiny_bundle, tmp_path, model):
  """gs:// through etils' epath, its storage redirected to a local directory: the manifest
  is written after everything else (an object store cannot rename a directory), and the
  bundle loads from its URL."""
  opened = []

  def redirect(original, path, *args, **kwargs):
    local = str(path).replace("gs://", f"{tmp_path}/")
    if args and "w" in str(args[0]):
      opened.append(local.rsplit("/", 1)[-1])
    return original(local, *args, **kwargs)

  names = ("open", "exists", "isdir", "listdir", "makedirs", "mkdir", "remove", "rmtree", "stat",
           "glob", "walk")
  # With TensorFlow installed epath sends gs:// to tf.io.gfile, past the mock: hide it.
  with epath_testing.mock_epath(**{name: redirect for name in names}), \
      mock.patch.object(gpath, "_is_tf_installed", lambda: False):
    export.export_run(str(tiny_bundle["workdir"]), "gs://bucket/bundles/tiny")
    assert opened == [bundle.WEIGHTS, bundle.README, bundle.MANIFEST]
    loaded = bigbigan.load("gs://bucket/bundles/tiny")
  assert (tmp_path / "bucket" / "bundles" / "tiny" / bundle.MANIFEST).exists()
  np.testing.assert_array_equal(loaded.encode(_images(8))["z_mean"],
                                model.encode(_images(8))["z_mean"])
