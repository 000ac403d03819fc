"""Fine-tuning: a new run that starts from an exported bundle (`config.init_from`).

    python -m bigbigan.main --config=configs/bigbigan_base.py:tiny \
        --config.init_from=/tmp/bundles/mnist --workdir=/tmp/finetune

The trainer (train.py) reads and checks the bundle before it writes anything, and, when the
run's checkpoint directory holds no checkpoint, starts from it:

- G and E (and D, if the bundle was exported with --with_discriminator; otherwise D's
  random initialisation from config.seed) take the bundle's params, BatchNorm statistics and
  spectral-norm vectors. A bundle's G and E are its run's EMA networks with their standing
  statistics, so these become the new run's live weights and its running statistics.
- The EMA (if the config keeps one) starts at the bundle's G and E params, and the standing
  statistics (if kept) at the bundle's BatchNorm statistics, so evaluation before the first
  refresh sees the bundle's model.
- The optimizer state is the fresh one of the normal initialisation (Adam's moments and
  count are zero whatever the params are), the step is 0, and the rng is config.seed's.

A config without an encoder (`encoder.kind="none"`, BigGAN alone) takes the bundle's G
only: its D judges images alone, so the bundle's D (which judges (x, z) pairs) cannot fit,
and it has no E; both start from the random initialisation. A run that has checkpoints
resumes from them and ignores `init_from` (train.py says so in its log).

Bundles hold BigBiGAN models only (`config.network="biggan"`); another family with
`init_from` set is refused.
"""

import dataclasses
import json
from typing import Any, Callable

import jax
import ml_collections

from bigbigan import bundle as bundle_lib
from bigbigan import checkpointing
from bigbigan import config_files
from bigbigan import families
from bigbigan.errors import BundleError, ConfigError
from bigbigan.state import TrainState

# The family whose runs bundles hold (export.py's BUNDLED_NETWORK).
BUNDLED_NETWORK = "biggan"
# Bundle collections that a network's state takes.
COLLECTIONS = ("params", "batch_stats", "spectral")
# The config fields that shape the networks' weights: where a mismatch's hint looks.
SHAPING_FIELDS = ("generator", "encoder", "discriminator", "latent_dim", "resolution",
                  "num_classes")
# How many differing fields a mismatch's hint names.
HINT_FIELDS = 3


@dataclasses.dataclass(frozen=True)
class Source:
  """A bundle read for a run, checked against its config.

  Attributes:
    path: the bundle's directory (config.init_from).
    step: the step of the bundle's run that its weights come from.
    weights: {network: {"params", "batch_stats", "spectral"}} of the networks the run
      takes (NumPy arrays).
    unused: the bundle's networks that the run does not take.
  """

  path: str
  step: int
  weights: dict[str, Any]
  unused: tuple[str, ...] = ()


def requested(config: ml_collections.ConfigDict) -> str:
  """config.init_from ("" for none; config.json files of older runs lack the field).

  Raises:
    ConfigError: init_from is set for a family that bundles do not hold.
  """
  path = config.get("init_from", "")
  if path and config.get("network") != BUNDLED_NETWORK:
    raise ConfigError(f"config.init_from={path!r}: bundles hold BigBiGAN models "
                      f"(config.network={BUNDLED_NETWORK!r}), not config.network="
                      f"{config.get('network')!r}; set init_from='' for this config")
  return path


def _taken_networks(state: TrainState, bundle_networks: set[str]) -> tuple[str, ...]:
  """The networks that a run of `state`'s structure takes from a bundle of these networks."""
  if state.encoder is None:
    return ("generator",)  # D without an encoder judges x alone: the bundle's cannot fit.
  return ("generator", "encoder") + (("discriminator",) * ("discriminator" in bundle_networks))


def _network_weights(state: TrainState, names: tuple[str, ...]) -> dict[str, Any]:
  """{network: {collection: tree}} of `state`'s live networks, shaped like bundle weights."""
  return {name: {c: getattr(getattr(state, name), c) for c in COLLECTIONS} for name in names}


def _differing_fields(bundle_config: dict, config: ml_collections.ConfigDict) -> list[str]:
  """The network fields where the bundle's run and `config` differ, "field=theirs (ours)"."""
  # Through JSON, so that tuples and lists compare as the manifest stores them.
  ours = config_files.flatten(json.loads(config.to_json_best_effort()))
  theirs = config_files.flatten(bundle_config)
  return [f"{field}={theirs.get(field)!r} (this config: {ours.get(field)!r})"
          for field in sorted(set(ours) | set(theirs))
          if field.split(".")[0] in SHAPING_FIELDS and ours.get(field) != theirs.get(field)]


def read_checked(config: ml_collections.ConfigDict) -> Source:
  """Reads the bundle that config.init_from names and checks that it fits the config: the
  structure, shapes and dtypes of the params, BatchNorm statistics and spectral-norm
  vectors of every network the run takes from it.

  Runs before the trainer writes anything: it builds no state, only its shapes.

  Raises:
    ConfigError: init_from is not set, names a bundle for another family, or a bundle
      whose networks do not fit the config (the message names the first difference and
      the config fields to set).
    BundleError: the bundle is missing, incomplete, corrupt or of another format version.
  """
  path = requested(config)
  if not path:
    raise ConfigError("config.init_from is not set: pass --config.init_from=BUNDLE")
  try:
    manifest, weights = bundle_lib.read_bundle(path)
  except BundleError as error:
    raise BundleError(f"config.init_from: {error}") from error
  family = families.of(config)
  init = family.state_initializer(config, family.build_networks(config))
  abstract_state = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
  taken = _taken_networks(abstract_state, set(weights))
  problem = checkpointing.describe_mismatch(_network_weights(abstract_state, taken),
                                            {name: weights.get(name) for name in taken})
  if problem:
    differing = _differing_fields(manifest.get("config", {}), config)
    if differing:
      fix = ("its run had " + "; ".join(differing[:HINT_FIELDS])
             + (f" and {len(differing) - HINT_FIELDS} more" if len(differing) > HINT_FIELDS
                else "")
             + ": set those fields as its run had them (bundle.json's \"config\"), or "
             "pass another bundle")
    else:
      fix = ("no network field of its run differs from this config's, so another version "
             "of bigbigan probably wrote it: export it again with this version")
    # describe_mismatch's phrases are about "it", the stored side: here the bundle.
    problem = (f"the bundle {problem[3:]}" if problem.startswith("it ")
               else f"the bundle's {problem}")
    raise ConfigError(f"config.init_from={path!r} does not fit the config: {problem}; {fix}")
  return Source(path=str(path), step=int(manifest.get("step", 0)),
                weights={name: weights[name] for name in taken},
                unused=tuple(sorted(set(weights) - set(taken))))


def with_bundle_weights(fresh: TrainState, weights: dict[str, Any]) -> TrainState:
  """`fresh` (a config's initial state) with the networks of `weights` (Source.weights) in
  place of its own: their params, batch_stats and spectral vectors, the EMA params and the
  standing statistics of the averaged networks. Optimizer states, step and rng stay
  `fresh`'s. Pure: jit it.
  """
  def like(tree, new):
    # The bundle's leaves in `fresh`'s own containers (read_checked matched their paths),
    # so that the state's structure, and with it the compiled update, is the usual one.
    return jax.tree.unflatten(jax.tree.structure(tree), jax.tree.leaves(new))

  replaced = {}
  for name, network in weights.items():
    own = getattr(fresh, name)
    replaced[name] = own.replace(**{c: like(getattr(own, c), network[c]) for c in COLLECTIONS})
  state = fresh.replace(**replaced)
  if state.ema is not None:
    state = state.replace(ema={
        name: like(params, weights[name]["params"]) if name in weights else params
        for name, params in state.ema.items()})
  if state.standing_stats is not None:
    state = state.replace(standing_stats={
        name: like(stats, weights[name]["batch_stats"]) if name in weights else stats
        for name, stats in state.standing_stats.items()})
  return state


def initial_state(init: Callable[[jax.Array], TrainState], source: Source, rng: jax.Array,
                  out_shardings: Any) -> TrainState:
  """The run's initial state: `init(rng)` (the config's state_initializer) with the
  bundle's networks, placed by `out_shardings` as the trainer's own init is."""
  # The weights are arguments, not constants folded into the compiled program.
  start = jax.jit(lambda rng, weights: with_bundle_weights(init(rng), weights),
                  out_shardings=out_shardings)
  return start(rng, source.weights)


NAMES = {"generator": "G", "encoder": "E", "discriminator": "D"}


def describe(source: Source) -> str:
  """The log line of a run that starts from `source`."""
  taken = [NAMES[name] for name in source.weights]
  networks = ", ".join(taken[:-1]) + " and " + taken[-1] if len(taken) > 1 else taken[0]
  line = f"Initialised {networks} from bundle {source.path} (step {source.step} of its run)"
  if "discriminator" not in source.weights:
    if "encoder" in source.weights:
      why = "the bundle has none (python -m bigbigan.export --with_discriminator adds it)"
    else:
      why = "config.encoder.kind='none': D judges images alone"
    line += f"; D starts from its random initialisation ({why})"
  if "encoder" in source.unused:
    line += "; the bundle's E is unused (config.encoder.kind='none')"
  return line + "; optimizer state is fresh"
