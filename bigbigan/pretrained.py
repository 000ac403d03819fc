"""Trained BigBiGAN models in one call: the interface of the released BigBiGAN modules.

    import bigbigan
    model = bigbigan.load("gs://bucket/bundles/revnet4x")   # a `bigbigan.export` bundle
    features = model.encode(images)   # uint8 [N, H, W, 3] (or [N, H, W, 1]), or float in [-1, 1]
    features["avepool_feat"], features["bn_crelu_feat"]     # the representations to probe
    features["z_mean"], features["z_stdev"], features["z_sample"]  # E(x), [N, latent_dim]
    z = model.sample_latents(16, truncation=0.5)  # the prior, or BigGAN's truncation trick
    images = model.generate(z)        # [N, R, R, 3] in [-1, 1]
    images, upsampled = model.generate(z, upsample=True)  # and [N, 2R, 2R, 3]
    images = model.reconstruct(x)     # G(E(x)), from z_sample (use_sample=False: z_mean)
    scores = model.discriminate(x, z) # {"score_xz", "score_x", "score_z"}, if exported with D
    losses = model.losses(x)          # D's hinge and E's and G's losses, if exported with D
    print(model.describe())           # every call's inputs and outputs (`signatures()`)

The names and value ranges are those of TF Hub's bigbigan-resnet50 and bigbigan-revnet50x4
modules, so a model trained here replaces them. Every method takes any batch size and returns
NumPy arrays: the batch is cut into chunks (padded to a few fixed sizes, so that each
compiles once), each chunk sharded over the local devices and run by the BigBiGAN family's
predict functions (families/bigbigan_predict.py), the jitted evaluation-mode networks that
evaluation runs: G and E with their EMA weights and those networks' own (standing)
BatchNorm statistics; uint8 images are normalised on the devices as there. Results are per image:
eval-mode BatchNorm keeps rows independent, and z_sample's noise is a function of each
image's 8-bit pixel values and `seed` (bigbigan_predict.per_image_noise), so an image's
outputs do not depend on the batch it comes in, nor on uint8 or float input, beyond float
rounding (XLA's kernels may round differently at another batch size: about 1e-6). Images of
another size are framed and resized as the pipeline's evaluation preprocessing does (the
central square, bicubic and antialiased, rounded to 8 bits) to the encoder's resolution, or,
for D, to G's.
"""

import math
import os
import pathlib
import warnings
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigbigan import bundle, checkpointing, losses, run_directory, sharding
from bigbigan.errors import BundleError, InputError
from bigbigan.families import bigbigan as bigbigan_family

# Float images may exceed [-1, 1] by rounding (x / 127.5 - 1 computed with an FMA does).
RANGE_SLACK = 1e-5
# The shipped models' bundles, beside this module (package data, pyproject.toml).
SHIPPED_DIR = "pretrained_models"
# DeepMind's released BigBiGAN modules, whose names a user may try.
TF_HUB_MODULES = ("bigbigan-resnet50", "bigbigan-revnet50x4")
# D's score names in our networks -> in the released modules' `discriminate`.
SCORE_NAMES = {"xz": "score_xz", "x": "score_x", "z": "score_z"}


def _as_images(images, what: str = "images") -> np.ndarray:
  """Checks images: uint8 [0, 255] or float [-1, 1], [N, H, W, 3 or 1]; returns them as
  uint8 or float32 with 3 channels (grayscale repeated, as the training pipeline does)."""
  x = np.asarray(images)
  if x.ndim != 4 or x.shape[-1] not in (1, 3) or not len(x):
    hint = " (one image: pass images[None])" if x.ndim == 3 else ""
    raise InputError(f"{what} must be a non-empty batch [N, H, W, 3] (or [N, H, W, 1]); got "
                     f"shape {x.shape}{hint}")
  if np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
      raise InputError(f"{what} contain NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < -1.0 - RANGE_SLACK or high > 1.0 + RANGE_SLACK:
      raise InputError(f"float {what} must be in [-1, 1], got [{low:.4g}, {high:.4g}]: pass "
                       "uint8 0-255, or scale them (x / 127.5 - 1 for 0-255 values)")
    if low >= 0.0:
      warnings.warn(f"float {what} have no negative values: the model takes [-1, 1]; "
                    "for [0, 1] images pass x * 2 - 1", stacklevel=3)
  elif x.dtype != np.uint8:
    raise InputError(f"{what} have dtype {x.dtype}: pass uint8 (0-255) or float in [-1, 1]")
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


class PretrainedBigBiGAN:
  """A trained BigBiGAN's E, G and (optionally) D, jitted and sharded over local devices.

  Attributes:
    config: the run's config (ml_collections.ConfigDict).
    step: the training step the weights come from.
    latent_dim: z's size.
    encoder_resolution, resolution: E's input size and G's output (D's input) size.
    has_discriminator: whether `discriminate` is available.
  """

  def __init__(self, config: ml_collections.ConfigDict, weights: dict, step: int = 0,
               devices: Optional[Sequence[jax.Device]] = None, max_batch_size: int = 256):
    """Builds the model from a bundle's config and weights (`load` reads them).

    Args:
      config: the run's config.
      weights: {network: {"params", "batch_stats", "spectral"}} (bundle_weights).
      step: the training step, for display.
      devices: where to run (default: this process's devices); batches are split over them.
      max_batch_size: the largest chunk run at once, rounded up to a multiple of the
        devices; lower it if an accelerator runs out of memory.
    """
    self.config, self.step = config, step
    self.latent_dim = config.latent_dim
    self.resolution = config.resolution
    self.encoder_resolution = config.encoder.resolution
    self.has_discriminator = "discriminator" in weights
    networks = bigbigan_family.build_networks(config)
    abstract_state = jax.eval_shape(bigbigan_family.state_initializer(config, networks),
                                    jax.random.PRNGKey(0))
    expected = bundle.bundle_weights(abstract_state, self.has_discriminator)
    problem = checkpointing.describe_mismatch(expected, weights)
    if problem:
      raise BundleError(f"the bundle's weights do not fit its config ({problem}): it was "
                        "written by another version of the networks; export it again")
    self._mesh = sharding.make_mesh(devices or jax.local_devices())
    self._devices = self._mesh.devices.size
    self._max_chunk = -(-max_batch_size // self._devices) * self._devices
    self._batch = sharding.batch_sharded(self._mesh)
    self._state = jax.device_put(bundle.state_from_weights(weights),
                                 sharding.replicated(self._mesh))
    # The functions evaluation runs; uint8 images travel as such and are normalised on the
    # devices, as there.
    self._predict = bigbigan_family.make_predict_fns(config, networks, self._mesh)
    self._parameters = bundle.parameter_counts(weights)

  def __repr__(self) -> str:
    e = self.config.encoder
    sizes = ", ".join(f"{name} {count:,}" for name, count in self._parameters.items())
    return (f"PretrainedBigBiGAN(step {self.step}: {e.backbone}-{e.depth} x{e.width} E at "
            f"{self.encoder_resolution} px, G at {self.resolution} px, z of "
            f"{self.latent_dim}; parameters: {sizes}; on {self._devices} "
            f"{self._mesh.devices.flat[0].platform} device(s))")

  def _chunk_size(self, rows: int) -> int:
    """Rows rounded up to the devices times a power of two, at most the largest chunk."""
    per_device = -(-rows // self._devices)
    return min(self._devices * 2 ** math.ceil(math.log2(per_device)), self._max_chunk)

  def _run(self, fn, *arrays: np.ndarray):
    """fn(*chunks) over chunks of the arrays' rows; the outputs' rows concatenated."""
    rows = len(arrays[0])
    size = self._chunk_size(rows)
    outputs = []
    for start in range(0, rows, size):
      pieces = [a[start:start + size] for a in arrays]
      padding = size - len(pieces[0])
      pieces = [np.concatenate([p, np.zeros((padding,) + p.shape[1:], p.dtype)])
                for p in pieces]
      pieces = [jax.device_put(p, self._batch) for p in pieces]
      out = fn(*(self._predict.normalise(p) if p.dtype == jnp.uint8 else p for p in pieces))
      outputs.append(jax.tree.map(lambda v: np.asarray(v)[:size - padding], out))
    return jax.tree.map(lambda *chunks: np.concatenate(chunks), *outputs)

  def _latents(self, z, rows: Optional[int] = None) -> np.ndarray:
    z = np.asarray(z)
    if z.ndim != 2 or z.shape[1] != self.latent_dim or not len(z):
      raise InputError(f"z must be a non-empty batch [N, {self.latent_dim}]; got shape "
                       f"{z.shape}")
    if rows is not None and len(z) != rows:
      raise InputError(f"x and z must have the same number of rows; got {rows} and {len(z)}")
    return z.astype(np.float32)

  def encode(self, images, seed: int = 0) -> dict[str, np.ndarray]:
    """E(images): {"z_mean", "z_stdev", "z_sample" [N, latent_dim], "avepool_feat",
    "bn_crelu_feat"}.

    z_sample = z_mean + z_stdev * eps (before the squashing of a tanh-bounded E), with eps a
    function of each image and `seed`; a deterministic E gives z_stdev zeros and z_sample
    equal to z_mean.

    Args:
      images: [N, H, W, 3] (or 1 channel), uint8 0-255 or float in [-1, 1]; resized to
        `encoder_resolution` if H, W differ.
      seed: z_sample's noise; an image and a seed always give the same z_sample.
    """
    return self._run(lambda x: self._predict.encode(self._state, x, seed), _as_images(images))

  def generate(self, z, upsample: bool = False):
    """G(z): float32 [N, resolution, resolution, 3] in [-1, 1] for z [N, latent_dim].

    With `upsample`, (images, upsampled): the images and the same at twice the size, each
    pixel repeated 2x2 (nearest-neighbour), which adds no value that G did not make.
    """
    images = self._run(lambda z: self._predict.generate(self._state, z), self._latents(z))
    if not upsample:
      return images
    return images, np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)

  def reconstruct(self, images, use_sample: bool = True, seed: int = 0) -> np.ndarray:
    """G(E(images)) at G's resolution, from z_sample (as the released modules' walkthrough
    reconstructs), or from z_mean with `use_sample=False`."""
    encoded = self.encode(images, seed)
    return self.generate(encoded["z_sample" if use_sample else "z_mean"])

  def _require_discriminator(self) -> None:
    if not self.has_discriminator:
      raise InputError("this bundle has no discriminator: export it with "
                       "python -m bigbigan.export --with_discriminator")

  def _scores(self, x: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """D's scores under our networks' names ("xz", "x", "z") for checked inputs."""
    return self._run(lambda x, z: self._predict.discriminate(self._state, x, z), x, z)

  def discriminate(self, x, z) -> dict[str, np.ndarray]:
    """D's scores [N] for pairs (x, z): "score_xz" and the unary "score_x", "score_z" the
    model has. x: images as for `encode`, brought to G's resolution."""
    self._require_discriminator()
    x = _as_images(x, "x")
    scores = self._scores(x, self._latents(z, len(x)))
    return {SCORE_NAMES[name]: score for name, score in scores.items()}

  def losses(self, images, z=None, seed: int = 0) -> dict[str, float]:
    """The BigBiGAN losses of a batch, as training computes them (losses.score_losses over
    the scores D keeps), with the bundle's evaluation-mode networks.

    Real pairs are (x, E(x)'s z_sample), generated pairs (G(z), z).

    Args:
      images: real images, as for `encode`.
      z: [M, latent_dim] latents of the generated pairs; None: len(images) prior samples
        drawn with `seed`.
      seed: E's noise and, without z, the prior samples'.

    Returns:
      {"discriminator": D's hinge loss, "encoder_generator": E's and G's linear loss (what
      training minimises, less G's orthogonal regularisation), "encoder": its real-pair
      part, sum_s mean(s(x, E(x))), "generator": its generated-pair part,
      -sum_s mean(s(G(z), z))}.
    """
    self._require_discriminator()
    x = _as_images(images)
    z = self.sample_latents(len(x), seed=seed) if z is None else self._latents(z)
    real = self._scores(x, self.encode(x, seed)["z_sample"])
    fake = self._scores(self.generate(z), z)
    d_loss, eg_loss = losses.score_losses(real, fake)
    return {"discriminator": float(d_loss), "encoder_generator": float(eg_loss),
            "encoder": float(sum(np.mean(s, dtype=np.float32) for s in real.values())),
            "generator": float(-sum(np.mean(s, dtype=np.float32) for s in fake.values()))}

  def sample_latents(self, n: int, truncation: Optional[float] = None,
                     seed: int = 0) -> np.ndarray:
    """n draws of z from the model's prior (config.latent_prior), float32 [n, latent_dim];
    with `truncation`, BigGAN's truncation trick: each z_i resampled until |z_i| <= the
    threshold (for a uniform prior, U(-t, t); thresholds >= 1 change nothing there)."""
    if not isinstance(n, int) or n < 1:
      raise InputError(f"n={n!r}: the number of latents, an integer >= 1")
    try:
      z = self._predict.sample_latents(jax.random.PRNGKey(seed), n, truncation)
    except ValueError as error:
      raise InputError(str(error)) from error
    return z.astype(np.float32)

  def signatures(self) -> dict[str, dict[str, dict[str, tuple]]]:
    """Every call's inputs and outputs: {call: {"inputs": {name: spec}, "outputs": {name:
    spec}}}, spec = (shape, dtype, range), with "N", "M" or "n" for the batch.

    The arrays' shapes and dtypes are those the compiled functions give (`jax.eval_shape`).
    """
    state = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), self._state)
    batch = lambda *shape: jax.ShapeDtypeStruct((self._devices,) + shape, jnp.float32)  # noqa: E731
    e_side, side, latent = self.encoder_resolution, self.resolution, self.latent_dim

    def spec(value, value_range, rows="N"):
      return (rows,) + tuple(value.shape[1:]), str(value.dtype), value_range

    bounded = self.config.encoder.latent_bound == "tanh"
    ranges = {"z_mean": "(-1, 1)" if bounded else "real",
              "z_stdev": "[0, inf) (zeros: deterministic E)",
              "z_sample": "(-1, 1)" if bounded else "real",
              # ResNet v2 ends with BN-ReLU; the RevNet with BN alone.
              "avepool_feat": "[0, inf)" if self.config.encoder.backbone == "resnet" else "real",
              "bn_crelu_feat": "[0, inf)"}
    encoded = jax.eval_shape(lambda x: self._predict.encode(state, x), batch(e_side, e_side, 3))
    images = jax.eval_shape(lambda z: self._predict.generate(state, z), batch(latent))
    upsampled = jax.ShapeDtypeStruct((1, 2 * side, 2 * side, 3), images.dtype)
    prior = ("N(0, I)" if self.config.latent_prior == "normal" else "U(-1, 1)") + " prior"
    image_input = ("N", "H", "W", "3 or 1"), "uint8 or float32", "[0, 255] or [-1, 1]"
    z_input = ("N", latent), "float32", f"real ({prior})"
    seed = (), "int", "any"
    calls = {
        "encode": {"inputs": {"images": image_input, "seed": seed},
                   "outputs": {k: spec(v, ranges[k]) for k, v in encoded.items()}},
        "generate": {"inputs": {"z": z_input, "upsample": ((), "bool", "default False")},
                     "outputs": {"images": spec(images, "[-1, 1]"),
                                 "upsampled (upsample=True)": spec(upsampled, "[-1, 1]")}},
        "reconstruct": {"inputs": {"images": image_input,
                                   "use_sample": ((), "bool", "default True"), "seed": seed},
                        "outputs": {"images": spec(images, "[-1, 1]")}},
        "sample_latents": {"inputs": {"n": ((), "int", ">= 1"),
                                      "truncation": ((), "float or None", "> 0"),
                                      "seed": seed},
                           "outputs": {"z": spec(batch(latent), f"{prior}, |z_i| <= "
                                                 "truncation", rows="n")}},
    }
    if self.has_discriminator:
      scores = jax.eval_shape(lambda x, z: self._predict.discriminate(state, x, z),
                              batch(side, side, 3), batch(latent))
      calls["discriminate"] = {
          "inputs": {"x": image_input, "z": z_input},
          "outputs": {SCORE_NAMES[k]: spec(v, "real (> 0: judged real)")
                      for k, v in scores.items()}}
      calls["losses"] = {
          "inputs": {"images": image_input,
                     "z": (("M", latent), "float32 or None", f"real (None: {prior})"),
                     "seed": seed},
          "outputs": {name: ((), "float", "real") for name in
                      ("discriminator", "encoder_generator", "encoder", "generator")}}
    return calls

  def describe(self) -> str:
    """`signatures()` as a table: one line per input and output of every call."""
    lines = [repr(self)]
    for call, signature in self.signatures().items():
      lines.append(f"{call}:")
      for kind in ("inputs", "outputs"):
        for name, (shape, dtype, value_range) in signature[kind].items():
          shape_text = "[" + ", ".join(str(d) for d in shape) + "]" if shape else "scalar"
          lines.append(f"  {kind[:-1]:<6} {name:<26} {shape_text:<20} {dtype:<16} "
                       f"{value_range}")
    return "\n".join(lines)


def shipped_models() -> dict[str, pathlib.Path]:
  """The models that ship with the package, {name: bundle directory}: each a bundle in
  bigbigan/pretrained_models/<name>/ whose README.md is its model card."""
  root = pathlib.Path(__file__).parent / SHIPPED_DIR
  return {path.parent.name: path.parent for path in sorted(root.glob(f"*/{bundle.MANIFEST}"))}


def bundle_path(name_or_path: str) -> str:
  """The bundle directory of a shipped model's name, or `name_or_path` itself if it is a
  path (it has a separator, or exists here).

  Raises:
    BundleError: a name that no shipped model has (the line lists those there are).
  """
  shipped = shipped_models()
  if name_or_path in shipped:
    return str(shipped[name_or_path])
  text = str(name_or_path)
  if "/" in text or os.sep in text or os.path.exists(text):
    return text
  names = ", ".join(shipped) or "none"
  hint = ("; DeepMind's TF-Hub modules cannot be converted yet (docs/pretrained.md)"
          if text in TF_HUB_MODULES else "")
  raise BundleError(f"no pretrained model is named {text!r}: the shipped ones are {names}; "
                    f"else pass a bundle's path (local or gs://){hint}")


def load(path: str, devices: Optional[Sequence[jax.Device]] = None,
         max_batch_size: int = 256) -> PretrainedBigBiGAN:
  """Loads a shipped model by name, or the bundle at `path` (local or gs://), verified
  against its checksum.

  Raises:
    BundleError: an unknown name, or the path is missing, not a bundle, of another format
      version, or corrupt.
  """
  manifest, weights = bundle.read_bundle(bundle_path(path))
  return PretrainedBigBiGAN(run_directory.config_from_dict(manifest["config"]), weights,
                            manifest["step"], devices, max_batch_size)
