"""The pretrained-model bundle: the directory `bigbigan.export` writes and `bigbigan.load` reads.

    BUNDLE/
      weights.msgpack   {"encoder": {"params", "batch_stats"}, "generator": {"params",
                        "batch_stats", "spectral"}, ["discriminator": {...}]}, NumPy arrays
                        serialised by flax.serialization (msgpack)
      README.md         what the bundle holds and the lines that load it
      bundle.json       the manifest: format, format_version, bigbigan_version, step, source,
                        networks (parameter counts), the run's config, checksum

`checksum` is "sha256:" + the SHA-256 of the manifest's other fields (canonical JSON) and the
weights file's bytes: one flipped byte in either is caught on loading. README.md is
documentation, outside the checksum.

Writes are atomic. A local bundle is written into a hidden sibling directory and renamed into
place (replacing an older bundle only with `overwrite`); on object stores (gs://), where
directories cannot be renamed, bundle.json is written last, so a bundle without it is an
unfinished export and is refused as such.
"""

import hashlib
import json
import uuid
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import serialization

from bigbigan import __version__
from bigbigan import files
from bigbigan.errors import BundleError
from bigbigan.state import NetworkState, TrainState, inference_batch_stats, inference_params

FORMAT = "bigbigan-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"
WEIGHTS = "weights.msgpack"
README = "README.md"
# What a training run's directory holds (train.py), and a bundle does not.
RUN_CONFIG = "config.json"


def _canonical(fields: dict) -> bytes:
  return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def checksum(fields: dict, weights: bytes) -> str:
  """"sha256:<hex>" of the manifest's fields (without "checksum") and the weights' bytes."""
  digest = hashlib.sha256(_canonical({k: v for k, v in fields.items() if k != "checksum"}))
  digest.update(weights)
  return f"sha256:{digest.hexdigest()}"


def _write_files(directory: epath.Path, manifest: dict, weights: bytes, readme: str) -> None:
  # The manifest last: on object stores it marks the bundle as complete.
  (directory / WEIGHTS).write_bytes(weights)
  (directory / README).write_text(readme)
  (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def write_bundle(out: str, fields: dict, weights: dict[str, Any], readme: Callable[[dict], str],
                 overwrite: bool = False) -> dict:
  """Writes a bundle to `out` (a local path or a URL such as gs://bucket/bundles/run).

  Args:
    out: the bundle's directory; it must not exist unless `overwrite` (and then it must
      hold a bundle's files only, perhaps an unfinished one: any other directory is left
      alone).
    fields: the manifest's fields besides format, format_version and checksum.
    weights: {network: {collection: pytree of arrays}}.
    readme: the manifest -> README.md's text.
    overwrite: replace an existing bundle at `out`.

  Returns:
    The manifest written.

  Raises:
    BundleError: `out` exists and `overwrite` is off, or it holds more than a bundle.
  """
  out = epath.Path(out)
  if out.exists():
    if not overwrite:
      raise BundleError(f"{out} exists: pass --overwrite to replace it, or choose another "
                        "--out")
    if not out.is_dir():
      raise BundleError(f"{out} is a file, not a bundle: choose another --out; it was left "
                        "untouched")
    # A bundle, or what an interrupted export to an object store left: nothing else.
    strangers = sorted({p.name for p in out.iterdir()} - {MANIFEST, WEIGHTS, README})
    if strangers:
      raise BundleError(f"{out} exists and is not a bundle (it holds {strangers[0]}): "
                        "choose another --out; it was left untouched")
  data = serialization.msgpack_serialize(weights)
  manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **fields}
  manifest["checksum"] = checksum(manifest, data)
  if files.is_url(out):
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # Incomplete until the new manifest lands.
    _write_files(out, manifest, data, readme(manifest))
    return manifest
  out.parent.mkdir(parents=True, exist_ok=True)
  staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
  staging.mkdir()
  try:
    _write_files(staging, manifest, data, readme(manifest))
    if out.exists():
      replaced = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:8]}"
      out.rename(replaced)
      staging.rename(out)
      replaced.rmtree()
    else:
      staging.rename(out)
  finally:
    if staging.exists():
      staging.rmtree()
  return manifest


def read_bundle(path: str) -> tuple[dict, dict[str, Any]]:
  """Reads and verifies the bundle at `path`.

  Returns:
    (the manifest, the weights: {network: {collection: pytree of NumPy arrays}}).

  Raises:
    BundleError: `path` is missing or not a (finished) bundle, its format version is not
      FORMAT_VERSION, or its content does not match its checksum.
  """
  path = epath.Path(path)
  if not path.exists():
    raise BundleError(f"bundle {path} not found: pass the directory that "
                      "`python -m bigbigan.export --out=...` wrote")
  if not path.is_dir():
    raise BundleError(f"{path} is a file, not a bundle: pass the directory that "
                      "`python -m bigbigan.export --out=...` wrote")
  if not (path / MANIFEST).exists() and (path / RUN_CONFIG).exists():
    raise BundleError(f"{path} is a training run's directory, not a bundle: export it with "
                      f"`python -m bigbigan.export --workdir={path} --out=BUNDLE`, then pass "
                      "BUNDLE")
  if not (path / MANIFEST).exists():
    raise BundleError(f"{path} is not a bigbigan bundle (no {MANIFEST}; an unfinished "
                      "export leaves none): export it again with python -m bigbigan.export")
  try:
    manifest = json.loads((path / MANIFEST).read_text())
    version = manifest["format_version"]
    fmt = manifest["format"]
  except (ValueError, KeyError, TypeError) as error:
    raise BundleError(f"bundle {path} is corrupt ({MANIFEST} is not a bundle manifest: "
                      f"{error}): export or copy it again") from error
  if fmt != FORMAT:
    raise BundleError(f"{path}/{MANIFEST} has format {fmt!r}, not {FORMAT!r}: pass a "
                      "directory written by python -m bigbigan.export")
  if version != FORMAT_VERSION:
    raise BundleError(
        f"bundle {path} has format version {version} (bigbigan "
        f"{manifest.get('bigbigan_version', '?')} wrote it); bigbigan {__version__} reads "
        f"version {FORMAT_VERSION}: export it again with this version (python -m bigbigan.export), "
        "or load it with the bigbigan version that wrote it")
  if not (path / WEIGHTS).exists():
    raise BundleError(f"bundle {path} is incomplete ({WEIGHTS} is missing): export or copy "
                      "it again")
  data = (path / WEIGHTS).read_bytes()
  if checksum(manifest, data) != manifest.get("checksum"):
    raise BundleError(f"bundle {path} is corrupt: its content does not match its checksum "
                      f"({manifest.get('checksum')}): export or copy it again")
  try:
    weights = serialization.msgpack_restore(data)
  except Exception as error:  # msgpack raises several types for damaged data.
    raise BundleError(f"bundle {path} is corrupt ({WEIGHTS} cannot be read: {error}): "
                      "export or copy it again") from error
  return manifest, weights


def bundle_weights(state: TrainState, with_discriminator: bool) -> dict:
  """What a bundle keeps of a TrainState: G's and E's inference (EMA) params with their own
  (standing) BatchNorm statistics and the spectral-norm vectors; D's live ones if
  `with_discriminator`."""
  weights = {}
  for name in ("generator", "encoder") + (("discriminator",) * with_discriminator):
    network = getattr(state, name)
    if name == "discriminator":
      params, batch_stats = network.params, network.batch_stats
    else:
      params, batch_stats = inference_params(state, name), inference_batch_stats(state, name)
    weights[name] = {"params": params, "batch_stats": batch_stats,
                     "spectral": network.spectral}
  return weights


def parameter_counts(weights: dict) -> dict[str, int]:
  """{network: its number of learned parameters} of bundle weights."""
  return {name: int(sum(np.size(leaf) for leaf in jax.tree.leaves(w["params"])))
          for name, w in weights.items()}


def state_from_weights(weights: dict) -> TrainState:
  """A TrainState for the predict functions: the bundle's params as the live ones."""
  def network(name):
    if name not in weights:
      return None
    return NetworkState(params=weights[name]["params"], opt_state=None,
                        batch_stats=weights[name]["batch_stats"],
                        spectral=weights[name]["spectral"])
  return TrainState(step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(0),
                    generator=network("generator"), encoder=network("encoder"),
                    discriminator=network("discriminator"))
