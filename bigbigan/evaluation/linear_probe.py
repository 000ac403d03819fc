"""A logistic-regression probe: how linearly decodable the labels are from some features.

Multinomial logistic regression with an L2 penalty on the weights, fitted on the full
training set with L-BFGS (the objective is strictly convex, so the fit is the unique optimum
up to tolerance, comparable across runs). Features are standardised with the training
statistics. Examples are sharded over the mesh's `data` axis; the weights are replicated.

This needs every feature in memory: for ImageNet, `streaming_probe.py` trains the same model
by SGD on a stream of feature batches, with the paper's early stopping on train_val.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from bigbigan import sharding


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mean = train.mean(axis=0)
  std = np.maximum(train.std(axis=0), 1e-6)  # Constant features stay 0, not NaN.
  return (train - mean) / std, (test - mean) / std


def _objective(params, x, y, mask, l2):
  """Mean cross-entropy over the real (mask=1) rows + l2 / 2 * ||W||^2."""
  logits = jnp.dot(x, params["weights"], precision=jax.lax.Precision.HIGHEST)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits + params["bias"], y)
  return jnp.sum(losses * mask) / jnp.sum(mask) + 0.5 * l2 * jnp.sum(params["weights"] ** 2)


@functools.partial(jax.jit, static_argnames=("max_steps",))
def _lbfgs(params, x, y, mask, l2, tolerance, max_steps: int):
  """L-BFGS until the gradient norm is below `tolerance` or after `max_steps` steps.

  The data are arguments, not constants closed over, so they stay sharded and one
  compilation serves every call with the same shapes.
  """
  objective = functools.partial(_objective, x=x, y=y, mask=mask, l2=l2)
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  def step(carry):
    params, state, _ = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                   value_fn=objective)
    return optax.apply_updates(params, updates), state, optax.tree.norm(grad)

  def keep_going(carry):
    _, state, grad_norm = carry
    return (optax.tree_utils.tree_get(state, "count") < max_steps) & (grad_norm >= tolerance)

  init = (params, solver.init(params), jnp.array(jnp.inf))
  return jax.lax.while_loop(keep_going, step, init)[0]


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, num_classes: int,
                            mesh: Mesh, l2: float = 1e-4, max_steps: int = 500,
                            tolerance: float = 1e-6) -> dict[str, np.ndarray]:
  """Minimises mean cross-entropy + l2 / 2 * ||W||^2 (bias unpenalised) with L-BFGS.

  Args:
    features: [N, D] float features (standardise them first).
    labels: [N] integer labels in [0, num_classes).
    num_classes: number of classes.
    mesh: the device mesh; examples are sharded over its `data` axis.
    l2: the weight penalty; sklearn's LogisticRegression(C) corresponds to l2 = 1 / (C N).
    max_steps: L-BFGS iterations at most.
    tolerance: stop when the gradient norm falls below this.

  Returns:
    {"weights": [D, C], "bias": [C]}.
  """
  x = sharding.from_host_array(np.asarray(features, np.float32), mesh)
  y = sharding.from_host_array(np.asarray(labels, np.int32), mesh)
  # from_host_array pads with zero rows; the mask gives them no weight.
  mask = sharding.from_host_array(np.ones(len(features), np.float32), mesh)
  params = {"weights": jnp.zeros((features.shape[1], num_classes), jnp.float32),
            "bias": jnp.zeros((num_classes,), jnp.float32)}
  params = jax.device_put(params, sharding.replicated(mesh))
  return jax.device_get(_lbfgs(params, x, y, mask, jnp.float32(l2), jnp.float32(tolerance),
                               max_steps=max_steps))


def linear_probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                          test_features: np.ndarray, test_labels: np.ndarray, mesh: Mesh,
                          l2: float = 1e-4) -> float:
  """Test accuracy of a logistic regression fitted on standardised training features."""
  train, test = _standardise(np.asarray(train_features, np.float64),
                             np.asarray(test_features, np.float64))
  num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
  params = fit_logistic_regression(train, train_labels, num_classes, mesh, l2)
  predictions = np.argmax(test @ params["weights"] + params["bias"], axis=1)
  return float(np.mean(predictions == np.asarray(test_labels)))
