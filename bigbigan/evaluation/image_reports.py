"""The `reports` evaluator: figures of an image model, as PNGs in the workdir and as
TensorBoard images ("report/<figure>/<panel>").

  reconstructions  x | G(z) | G(E(x)) (samples alone without an encoder);
  interpolations   G along straight lines between E(x_a) and E(x_b);
  neighbours       query images and their nearest neighbours by the headline feature.

The title quotes the headline accuracy when this evaluation computed one.
"""

import jax
import numpy as np
from etils import epath

from bigbigan import sharding
from bigbigan.evaluation import plots
from bigbigan.evaluation.context import RESULTS_KEY, EvaluationContext
from bigbigan.families.common import PredictFns, to_discriminator_resolution
from bigbigan.state import TrainState

GRID_IMAGES = 64
GRID_COLUMNS = 8
INTERPOLATION_PAIRS = 8
INTERPOLATION_STEPS = 8  # Latents between (and including) E(x_a) and E(x_b).
NEIGHBOUR_QUERIES = 8
NEIGHBOURS = 7


def _to_unit_range(images) -> np.ndarray:
  """[-1, 1] -> [0, 1], for figures."""
  return (np.asarray(images, np.float32) + 1.0) / 2.0


def cosine_similarities(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
  """[Q, P] cosine similarities, in float64."""
  normalise = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
  return normalise(np.asarray(queries, np.float64)) @ normalise(
      np.asarray(pool, np.float64)).T


class Reports:
  """The `reports` evaluator. Its title quotes the accuracy found by the evaluators that ran
  before it in the same evaluation (the context's shared RESULTS_KEY)."""

  def __init__(self, context: EvaluationContext):
    self._context = context
    self._config = context.config
    self._latents = None  # The sample grid's, drawn at the first report.

  def run(self, predict: PredictFns, state: TrainState, step: int) -> dict:
    earlier = self._context.shared.get(RESULTS_KEY, {})
    accuracy = earlier.get("linear_accuracy", earlier.get("knn_1_accuracy_cosine"))
    title = "" if accuracy is None else (
        f"{100 * accuracy:.2f}% "
        f"({'linear probe' if 'linear_accuracy' in earlier else '1-NN'})")
    return self._write(self._figures(predict, state), step, title)

  def _global_images(self, predict: PredictFns, batch: dict) -> jax.Array:
    return predict.normalise(sharding.to_global_batch(batch["image"], self._context.mesh))

  def _figures(self, predict: PredictFns, state: TrainState) -> dict[str, dict]:
    """{figure name: {panel: [N, H, W, 3] images in [-1, 1], or a mosaic}} at G's
    resolution."""
    c, mesh = self._config, self._context.mesh
    if self._latents is None:
      self._latents = sharding.from_host_array(
          predict.sample_latents(jax.random.PRNGKey(c.seed + 1), GRID_IMAGES), mesh)
    grids = {"samples G(z)": predict.generate(state, self._latents)}
    if predict.encode is None:
      return {"samples": grids}
    x = self._global_images(predict, next(self._context.data.eval_batches(c.eval_split)))
    encoded = predict.encode(state, x)
    reconstructions = predict.generate(state, encoded["z_mean"])
    x_small = to_discriminator_resolution(x, c.resolution)
    figures = {"reconstructions": {"data x": x_small, **grids,
                                   "reconstructions G(E(x))": reconstructions}}
    figures["interpolations"] = {"G(lerp(E(x_a), E(x_b)))": self._interpolations(
        predict, state, x_small, sharding.gather_rows(encoded["z_mean"]))}
    name = c.eval_features[0]
    figures["neighbours"] = {f"queries and nearest by {name}": self._neighbours(
        predict, state, sharding.gather_rows(x_small)[:NEIGHBOUR_QUERIES],
        sharding.gather_rows(encoded[name])[:NEIGHBOUR_QUERIES])}
    return figures

  def _interpolations(self, predict: PredictFns, state: TrainState, x: jax.Array,
                      z: np.ndarray) -> np.ndarray:
    """Rows of x_a, G at INTERPOLATION_STEPS latents from E(x_a) to E(x_b), x_b."""
    pairs = min(INTERPOLATION_PAIRS, len(z) // 2)
    weights = np.linspace(0.0, 1.0, INTERPOLATION_STEPS)[None, :, None]
    z_a, z_b = z[:pairs, None], z[pairs:2 * pairs, None]
    latents = ((1 - weights) * z_a + weights * z_b).reshape(-1, z.shape[1])
    generated = sharding.gather_rows(predict.generate(
        state, sharding.from_host_array(latents.astype(np.float32), self._context.mesh)),
        len(latents)).reshape((pairs, INTERPOLATION_STEPS) + x.shape[1:])
    x = sharding.gather_rows(x)
    rows = np.concatenate([x[:pairs, None], generated, x[pairs:2 * pairs, None]], axis=1)
    return rows.reshape((-1,) + x.shape[1:])

  def _neighbours(self, predict: PredictFns, state: TrainState, queries: np.ndarray,
                  query_features: np.ndarray) -> np.ndarray:
    """Rows of a query image and its NEIGHBOURS nearest (cosine, exact on the host) among
    the first `config.report_neighbour_pool` images of `knn_train_split`."""
    c, mesh = self._config, self._context.mesh
    name = c.eval_features[0]
    pool_images, pool_features, pooled = [], [], 0
    for batch in self._context.data.eval_batches(c.knn_train_split):
      x = self._global_images(predict, batch)
      mask = sharding.gather_rows(sharding.to_global_batch(batch["mask"], mesh))
      mask = mask.astype(bool)
      pool_features.append(sharding.gather_rows(predict.encode(state, x)[name])[mask])
      pool_images.append(sharding.gather_rows(
          to_discriminator_resolution(x, c.resolution))[mask])
      pooled += int(mask.sum())
      if pooled >= c.report_neighbour_pool:
        break
    pool = np.concatenate(pool_features)[:c.report_neighbour_pool]
    images = np.concatenate(pool_images)[:len(pool)]
    similarity = cosine_similarities(query_features, pool)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :NEIGHBOURS]
    rows = np.concatenate([queries[:, None], images[order]], axis=1)
    return rows.reshape((-1,) + images.shape[1:])

  def _write(self, figures: dict, step: int, title: str) -> dict[str, np.ndarray]:
    """PNGs on process 0; returns {"report/<figure>/<panel>": [1, H, W, 3]}."""
    images = {}
    for figure, grids in figures.items():
      grids = {name: _to_unit_range(sharding.gather_rows(v, GRID_IMAGES)
                                    if isinstance(v, jax.Array) else v)
               for name, v in grids.items()}
      columns = {"interpolations": INTERPOLATION_STEPS + 2,
                 "neighbours": NEIGHBOURS + 1}.get(figure, GRID_COLUMNS)
      if jax.process_index() == 0:
        plots.save_image_grids(epath.Path(self._context.workdir) / f"{figure}_{step:07d}.png",
                               grids, f"step {step}: {title}", columns=columns)
      for name, grid in grids.items():
        images[f"report/{figure}/{name}"] = plots.image_mosaic(grid, columns)[None]
    return images
