"""The BigBiGAN paper's linear probe at ImageNet scale: a logistic regression on frozen
features, trained by SGD on a stream of feature batches and early-stopped on train_val.

`linear_probe.py` fits the same model exactly (L-BFGS on every example at once), which needs
all features in memory: 1.28M ImageNet images x 8192 features is 42 GB. Here the features
never are in memory. The probe reads three streams, each a callable that returns a fresh
iterator of batches (one call per pass):

  train       the training split minus train_val; one call per epoch;
  train_val   examples held out of the training split (the paper holds out 10,000): after
              every epoch the probe's top-1 accuracy on them picks the epoch to keep;
  validation  where the kept probe's top-1 and top-5 accuracy are reported.

A batch is {"features": [B, D], "label": [B], "mask": [B]}: global jax.Arrays sharded on
the mesh's `data` axis, or numpy arrays holding this process's rows of the global batch
(on one process, the whole batch), as `sharding.to_global_batch` assembles them. Rows whose
mask is 0 (the padding of a last batch) count for nothing. `feature_batches` builds such a
stream from image batches (e.g. `pipeline.eval_batches`) and a jitted encoder, so features
are computed on the fly; `in_memory_batches` builds one from numpy arrays, shuffled per
epoch, and `train_linear_probe_in_memory` is the probe on those.

The optimisation, and why:
  * SGD with Nesterov momentum 0.9 on the mean cross-entropy of each batch (plus an optional
    L2 penalty on the weights, 0 by default: early stopping on train_val is the regulariser,
    as in the paper's protocol). The problem is convex and the features are standardised,
    so plain momentum SGD is enough, costs one copy of the weights (Adam's two), and its
    one hyperparameter, the learning rate, means the same for every feature.
  * A cosine learning-rate schedule over epochs, held constant within an epoch: the probe
    need not know the number of batches per epoch (a stream does not say), and the last
    epochs' small steps average out SGD's noise.
  * The weights start at zero: the result is a function of the streams alone.
  * Standardisation: with `standardise=True` (the default) a first pass over the training
    stream computes each feature's mean and standard deviation (running moments, combined
    batch by batch on the devices); the probe sees (x - mean) / std. This costs one more
    pass of the encoder, but makes the default learning rate fit features of any scale
    (avepool features of a ResNet range over orders of magnitude). Features that are
    already batch-normalised (the paper's BN+CReLU) can skip it: `standardise=False`.

Weights are replicated on the mesh and batches sharded on `data`, so each update is one
jitted SPMD step whose gradient is over the global batch; accuracies are sums over the
global batch, identical on every process, so every process takes the same early-stopping
decision.
"""

import dataclasses
import itertools
import math
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from bigbigan import progress
from bigbigan import sharding

FEATURES_KEY = "features"
LABEL_KEY = "label"
MASK_KEY = "mask"
TOP_K = 5  # The second accuracy reported: the label is among the 5 largest logits.
# Standard deviations below this count as constant features, which then stay 0 (not NaN).
MIN_FEATURE_SCALE = 1e-6

Batch = dict[str, Any]
Batches = Callable[[], Iterator[Batch]]
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ProbeResult:
  """What a probe training returns.

  Attributes:
    best_epoch: the (0-based) epoch whose params are kept: the first with the highest
      train_val top-1 accuracy.
    train_val_top1: the train_val top-1 accuracy after each epoch that ran.
    validation_top1: the kept probe's top-1 accuracy on the validation stream.
    validation_top5: the same for top-5 (the label among the 5 largest logits).
    train_loss: the mean cross-entropy of each epoch's training batches (real rows only).
    train_examples: real (mask 1) training rows seen in each epoch, over all processes.
    params: the kept probe, numpy: logits = (x - feature_mean) / feature_scale @ weights +
      bias, with "weights" [D, C], "bias" [C], "feature_mean" [D], "feature_scale" [D].
  """
  best_epoch: int
  train_val_top1: tuple[float, ...]
  validation_top1: float
  validation_top5: float
  train_loss: tuple[float, ...]
  train_examples: tuple[int, ...]
  params: dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------
# Streams of feature batches.


def feature_batches(image_batches: Callable[[], Iterator[dict[str, np.ndarray]]],
                    feature_fn: Callable[[jax.Array], jax.Array], mesh: Mesh,
                    image_key: str = "image") -> Batches:
  """A stream of feature batches computed on the fly from a stream of image batches.

  Args:
    image_batches: returns a fresh iterator of this process's rows of image batches,
      {image_key, "label", "mask"} numpy arrays, e.g.
      `lambda: pipeline.eval_batches(dataset, split, batch_size, preprocess)` (which reads
      in file order: TFDS shuffled the examples when it built the dataset, but every epoch
      then sees the same order; a per-epoch reshuffle is the caller's to add).
    feature_fn: a global image batch (sharded on `data`) -> [B, D] features, jitted over
      `mesh` (e.g. the encoder's forward pass and the choice of one of its outputs).
    mesh: the device mesh.
    image_key: the images' key in `image_batches`' dicts.

  Returns:
    A callable that returns a fresh iterator of feature batches, for `train_linear_probe`.
  """
  def batches() -> Iterator[Batch]:
    for batch in image_batches():
      yield {FEATURES_KEY: feature_fn(sharding.to_global_batch(batch[image_key], mesh)),
             LABEL_KEY: sharding.to_global_batch(np.asarray(batch[LABEL_KEY]), mesh),
             MASK_KEY: sharding.to_global_batch(np.asarray(batch[MASK_KEY]), mesh)}
  return batches


def in_memory_batches(features: np.ndarray, labels: np.ndarray, batch_size: int,
                      seed: Optional[int] = None, process_index: Optional[int] = None,
                      process_count: Optional[int] = None) -> Batches:
  """A stream of padded, masked batches of arrays that every process holds in full.

  Every call of the returned callable is one pass: with a `seed`, the n-th call (n = 0, 1,
  ...) visits the examples in an order drawn from (seed, n), so a new order per epoch and
  the same orders for the same seed; without one, in their given order. The last batch is
  padded with zero rows whose mask is False.

  Args:
    features: [N, D] features.
    labels: [N] integer labels.
    batch_size: rows of a global batch: a multiple of the number of devices.
    seed: the shuffling seed; None keeps the given order.
    process_index: this process; defaults to `jax.process_index()`.
    process_count: the number of processes; defaults to `jax.process_count()`.

  Returns:
    A callable that returns a fresh iterator of {"features", "label", "mask"} numpy
    batches, each holding this process's `batch_size // process_count` rows: process p's
    rows are rows [p * local, (p + 1) * local) of the global batch, the order in which
    `sharding.to_global_batch` assembles them.
  """
  features, labels = np.asarray(features), np.asarray(labels)
  if len(features) != len(labels):
    raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} does not divide over {process_count} processes")
  local_batch_size = batch_size // process_count
  num_batches = max(1, math.ceil(len(features) / batch_size))
  passes = itertools.count()

  def batches() -> Iterator[Batch]:
    pass_index = next(passes)
    order = (np.arange(len(features)) if seed is None
             else np.random.default_rng([seed, pass_index]).permutation(len(features)))
    for batch in range(num_batches):
      start = batch * batch_size + process_index * local_batch_size
      rows = order[start:min(start + local_batch_size, len(features))]
      padding = local_batch_size - len(rows)
      # Slices past the end are empty: a process whose rows are all padding still yields
      # the batch, so every process runs the same number of steps.
      yield {
          FEATURES_KEY: np.concatenate(
              [features[rows], np.zeros((padding,) + features.shape[1:], features.dtype)]),
          LABEL_KEY: np.concatenate([labels[rows], np.zeros(padding, labels.dtype)]),
          MASK_KEY: np.arange(local_batch_size) < len(rows)}
  return batches


def _on_mesh(batch: Batch, mesh: Mesh) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(features, labels, mask) as global arrays; numpy arrays are this process's rows."""
  def place(value):
    return value if isinstance(value, jax.Array) else sharding.to_global_batch(
        np.asarray(value), mesh)
  return place(batch[FEATURES_KEY]), place(batch[LABEL_KEY]), place(batch[MASK_KEY])


# ---------------------------------------------------------------------------------------
# The model, its loss and accuracies.


def _logits(params: Params, features: jax.Array) -> jax.Array:
  standardised = (features.astype(jnp.float32) - params["feature_mean"]) / params["feature_scale"]
  return jnp.dot(standardised, params["weights"],
                 precision=jax.lax.Precision.HIGHEST) + params["bias"]


def top_k_hits(logits: jax.Array, labels: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Whether each row's label has the largest logit, and whether it is among the k largest.

  Classes rank by logit, equal logits by class index (the smaller first, as `jax.lax.top_k`
  and a stable `np.argsort(-logits)` order them). The rank is counted, not sorted for: a
  comparison and a sum per row, which XLA partitions over a sharded batch, where a top-k
  would first gather the logits of the whole batch on every device.

  Args:
    logits: [B, C].
    labels: [B] integer labels.
    k: how many of the largest logits count for the second answer.

  Returns:
    (top-1 hits, top-k hits), [B] booleans each.
  """
  label_logits = jnp.take_along_axis(logits, labels[:, None], axis=1)
  classes = jnp.arange(logits.shape[1])[None, :]
  ranked_before = (logits > label_logits) | ((logits == label_logits) &
                                             (classes < labels[:, None]))
  rank = jnp.sum(ranked_before, axis=1)
  return rank == 0, rank < k


@jax.jit
def _batch_hits(params: Params, features, labels, mask) -> jax.Array:
  """[top-1 hits, top-5 hits, real rows] summed over a global batch (int32)."""
  top1, topk = top_k_hits(_logits(params, features), labels.astype(jnp.int32), TOP_K)
  real = mask.astype(bool)
  return jnp.stack([jnp.sum(top1 & real), jnp.sum(topk & real), jnp.sum(real)]).astype(
      jnp.int32)


def evaluate_probe(params: Params, batches: Batches, mesh: Mesh) -> dict[str, float]:
  """Top-1 and top-5 accuracy of a probe over one pass of a stream.

  Args:
    params: {"weights" [D, C], "bias" [C], "feature_mean" [D], "feature_scale" [D]}, numpy
      or replicated on `mesh` (`ProbeResult.params`, for instance).
    batches: returns a fresh iterator of {"features", "label", "mask"} batches.
    mesh: the device mesh.

  Returns:
    {"top1": accuracy, "top5": accuracy, "examples": real rows}, over all processes.
  """
  params = jax.device_put(params, sharding.replicated(mesh))
  totals = None
  for batch in batches():
    # Sums stay on the devices until the end: no host round trip per batch.
    hits = _batch_hits(params, *_on_mesh(batch, mesh))
    totals = hits if totals is None else totals + hits
  top1, topk, examples = (0, 0, 0) if totals is None else (int(n) for n in np.asarray(totals))
  if examples == 0:
    raise ValueError("the evaluation stream has no real (mask 1) rows")
  return {"top1": top1 / examples, "top5": topk / examples, "examples": examples}


# ---------------------------------------------------------------------------------------
# Standardisation.


@jax.jit
def _combine_moments(moments, features, mask):
  """Adds a batch's real rows to running (count, mean, sum of squared deviations).

  Chan et al.'s pairwise update: each batch's moments are computed about its own mean and
  merged, which stays accurate in float32 where summing x and x^2 over a million rows would
  cancel catastrophically.
  """
  count, mean, squares = moments
  weights = mask.astype(jnp.float32)[:, None]
  x = features.astype(jnp.float32)
  batch_count = jnp.sum(weights)
  batch_mean = jnp.sum(x * weights, axis=0) / jnp.maximum(batch_count, 1.0)
  batch_squares = jnp.sum(weights * (x - batch_mean) ** 2, axis=0)
  total = count + batch_count
  share = batch_count / jnp.maximum(total, 1.0)
  delta = batch_mean - mean
  return total, mean + delta * share, squares + batch_squares + delta ** 2 * count * share


def feature_standardisation(batches: Batches, mesh: Mesh) -> dict[str, np.ndarray]:
  """Each feature's mean and standard deviation over the real rows of one pass.

  Args:
    batches: returns a fresh iterator of {"features", "label", "mask"} batches.
    mesh: the device mesh.

  Returns:
    {"feature_mean": [D], "feature_scale": [D]} float32; a scale below MIN_FEATURE_SCALE
    (a constant feature) is raised to it, so the standardised feature is 0, not NaN.
  """
  moments = None
  for batch in batches():
    features, _, mask = _on_mesh(batch, mesh)
    if moments is None:
      zeros = np.zeros(features.shape[1], np.float32)
      moments = jax.device_put((np.float32(0), zeros, zeros), sharding.replicated(mesh))
    moments = _combine_moments(moments, features, mask)
  if moments is None or float(moments[0]) == 0:
    raise ValueError("the training stream has no real (mask 1) rows to standardise with")
  count, mean, squares = (np.asarray(m, np.float64) for m in moments)
  scale = np.maximum(np.sqrt(squares / count), MIN_FEATURE_SCALE)
  return {"feature_mean": mean.astype(np.float32), "feature_scale": scale.astype(np.float32)}


# ---------------------------------------------------------------------------------------
# Training.


def _optimizer(learning_rate, momentum) -> optax.GradientTransformation:
  # Built inside the jitted step with traced hyperparameters, so one compilation serves
  # every epoch's learning rate; `trace` always, so the state's structure does not depend
  # on whether momentum is 0.
  return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


@jax.jit
def _train_step(state: Params, standardisation: Params, features, labels, mask,
                learning_rate, momentum, l2):
  """One SGD step on a global batch; returns (state, [sum of losses, real rows])."""
  weights = mask.astype(jnp.float32)
  real_rows = jnp.sum(weights)

  def objective(trainable):
    logits = _logits({**trainable, **standardisation}, features)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
    loss_sum = jnp.sum(losses * weights)
    penalty = 0.5 * l2 * jnp.sum(trainable["weights"] ** 2)  # The bias is not penalised.
    return loss_sum / jnp.maximum(real_rows, 1.0) + penalty, loss_sum

  (_, loss_sum), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
  updates, opt_state = _optimizer(learning_rate, momentum).update(grads, state["opt_state"])
  stepped = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}
  # A batch of padding only (possible at the end of a stream) leaves the probe as it was,
  # instead of applying the penalty and momentum for nothing.
  state = jax.tree.map(lambda new, old: jnp.where(real_rows > 0, new, old), stepped, state)
  return state, jnp.stack([loss_sum, real_rows])


def _initial_state(num_features: int, num_classes: int,
                   replicated: NamedSharding) -> Params:
  params = {"weights": np.zeros((num_features, num_classes), np.float32),
            "bias": np.zeros((num_classes,), np.float32)}
  opt_state = _optimizer(0.0, 0.0).init(params)
  return jax.device_put({"params": params, "opt_state": opt_state}, replicated)


def _cosine_learning_rate(base: float, epoch: int, epochs: int) -> float:
  """`base` at epoch 0, decaying as half a cosine period to 0 at epoch `epochs`."""
  return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def train_linear_probe(train_batches: Batches, train_val_batches: Batches,
                       validation_batches: Batches, num_classes: int, mesh: Mesh, *,
                       epochs: int = 90, learning_rate: float = 0.1, momentum: float = 0.9,
                       l2: float = 0.0, patience: Optional[int] = None,
                       standardise: bool = True) -> ProbeResult:
  """Trains a logistic-regression probe on a stream of features; keeps the best train_val
  epoch and reports its validation accuracy.

  Args:
    train_batches: returns a fresh iterator of training batches {"features" [B, D],
      "label" [B], "mask" [B]} (global arrays sharded on `data`, or this process's rows as
      numpy); called once per epoch, and once more first if `standardise`. Every process
      must yield the same number of batches.
    train_val_batches: the same for train_val (examples held out of the training split);
      one pass after each epoch.
    validation_batches: the same for the validation set; one pass at the end.
    num_classes: labels are in [0, num_classes).
    mesh: the device mesh; the probe is replicated, batches sharded on `data`.
    epochs: epochs at most.
    learning_rate: SGD's learning rate at epoch 0, for the mean loss of a batch; a cosine
      over the epochs takes it to 0.
    momentum: Nesterov momentum.
    l2: penalty l2 / 2 * ||weights||^2 added to the mean loss of each batch.
    patience: stop after this many epochs without a better train_val top-1; None runs all
      `epochs` (and still keeps the best epoch).
    standardise: standardise features with their mean and standard deviation over one
      pass of `train_batches`; False for features that are already normalised.

  Returns:
    A ProbeResult.

  Raises:
    FloatingPointError: an epoch's training loss is not finite.
    ValueError: a stream is empty, or `epochs` or `patience` is not positive.
  """
  if epochs < 1 or (patience is not None and patience < 1):
    raise ValueError(f"epochs ({epochs}) and patience ({patience}) must be positive")
  replicated = sharding.replicated(mesh)
  standardisation = (feature_standardisation(train_batches, mesh) if standardise else None)
  state = None
  best_epoch, best_params, best_top1 = -1, None, -1.0
  train_val_top1, train_loss, train_examples = [], [], []
  for epoch in progress.track(range(epochs), "linear probe", epochs, unit="epochs"):
    rate = _cosine_learning_rate(learning_rate, epoch, epochs)
    totals = None
    for batch in train_batches():
      features, labels, mask = _on_mesh(batch, mesh)
      if state is None:
        num_features = features.shape[1]
        if standardisation is None:
          standardisation = {"feature_mean": np.zeros(num_features, np.float32),
                             "feature_scale": np.ones(num_features, np.float32)}
        standardisation = jax.device_put(standardisation, replicated)
        state = _initial_state(num_features, num_classes, replicated)
      state, sums = _train_step(state, standardisation, features, labels, mask,
                                np.float32(rate), np.float32(momentum), np.float32(l2))
      totals = sums if totals is None else totals + sums
    if totals is None:
      raise ValueError("the training stream yielded no batches")
    loss_sum, examples = (float(x) for x in np.asarray(totals))
    loss = loss_sum / max(examples, 1.0)
    if not math.isfinite(loss):
      raise FloatingPointError(f"linear probe: train_loss is {loss} in epoch {epoch}")
    train_loss.append(loss)
    train_examples.append(int(examples))

    params = {**state["params"], **standardisation}
    top1 = evaluate_probe(params, train_val_batches, mesh)["top1"]
    train_val_top1.append(top1)
    if top1 > best_top1:
      # Arrays are immutable and the step does not donate them: keeping the reference keeps
      # this epoch's params.
      best_epoch, best_params, best_top1 = epoch, params, top1
    elif patience is not None and epoch - best_epoch >= patience:
      break

  validation = evaluate_probe(best_params, validation_batches, mesh)
  return ProbeResult(best_epoch=best_epoch, train_val_top1=tuple(train_val_top1),
                     validation_top1=validation["top1"], validation_top5=validation["top5"],
                     train_loss=tuple(train_loss), train_examples=tuple(train_examples),
                     params={k: np.asarray(v) for k, v in jax.device_get(best_params).items()})


def train_linear_probe_in_memory(train: tuple[np.ndarray, np.ndarray],
                                 train_val: tuple[np.ndarray, np.ndarray],
                                 validation: tuple[np.ndarray, np.ndarray], num_classes: int,
                                 mesh: Mesh, *, batch_size: int = 256, seed: int = 0,
                                 **options) -> ProbeResult:
  """`train_linear_probe` on (features, labels) numpy arrays that every process holds.

  The training set is reshuffled every pass (`in_memory_batches` with `seed`); train_val
  and validation are read in order. Feeding `train_linear_probe` the same batches gives
  the same result.

  Args:
    train: ([N, D] features, [N] labels) to train on.
    train_val: the same for early stopping.
    validation: the same for the reported accuracy.
    num_classes: labels are in [0, num_classes).
    mesh: the device mesh.
    batch_size: rows of a global batch; a multiple of the number of devices.
    seed: the shuffling seed.
    **options: `train_linear_probe`'s keyword arguments (epochs, learning_rate, ...).

  Returns:
    A ProbeResult.
  """
  if batch_size % mesh.devices.size:
    raise ValueError(f"batch_size {batch_size} does not divide over {mesh.devices.size} "
                     f"devices")
  return train_linear_probe(in_memory_batches(*train, batch_size, seed=seed),
                            in_memory_batches(*train_val, batch_size),
                            in_memory_batches(*validation, batch_size), num_classes, mesh,
                            **options)
