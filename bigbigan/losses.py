"""Adversarial objectives on the discriminator's logits for real (x, E(x)) and fake (G(z), z).

Each function returns a scalar: the mean over the real pairs plus the mean over the fake pairs.

- "bigan": D maximises log D(x, E(x)) + log(1 - D(G(z), z)); E and G minimise the "inverse"
  objective of the BiGAN/ALI papers (labels swapped), the non-saturating form, which gives
  strong gradients early in training.
- "minimax": the same D loss; E and G minimise the negated D objective (the saturating
  game of the papers' theory).
- "hinge": BigBiGAN's hinge for D, max(0, 1 - y s); E and G minimise the linear y s.

BigBiGAN's discriminator gives several scores per pair (s_x, s_z, s_xz): its losses are the
sums over the scores of the hinge losses (`score_losses`). BigGAN's orthogonal
regularisation of the generator's weights is here too.
"""

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from bigbigan.errors import ConfigError

LOSS_KINDS = ("bigan", "minimax", "hinge")
RECONSTRUCTION_LOSSES = ("l2", "l1")


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, kind: str) -> jax.Array:
  """The discriminator's loss (to minimise)."""
  if kind in ("bigan", "minimax"):
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f).
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
  if kind == "hinge":
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
  raise ConfigError(f"config.loss={kind!r}: allowed {LOSS_KINDS}")


def generator_encoder_loss(real_logits: jax.Array, fake_logits: jax.Array,
                           kind: str) -> jax.Array:
  """The joint loss of the encoder (real pairs) and the generator (fake pairs), to minimise."""
  if kind == "bigan":
    return jnp.mean(jax.nn.softplus(real_logits)) + jnp.mean(jax.nn.softplus(-fake_logits))
  if kind == "minimax":
    return -discriminator_loss(real_logits, fake_logits, kind)
  if kind == "hinge":
    return jnp.mean(real_logits) - jnp.mean(fake_logits)
  raise ConfigError(f"config.loss={kind!r}: allowed {LOSS_KINDS}")


def r1_penalty(discriminator: Callable[..., jax.Array], real_inputs: Sequence[jax.Array]
               ) -> jax.Array:
  """Mean over real examples of ||grad of D's logit w.r.t. all of D's inputs||^2.

  The zero-centred gradient penalty on real data (R1, Mescheder et al. 2018) makes the
  discriminator flat on the data, which lets GAN training converge to sharp modes instead of
  oscillating around them. For BiGAN the inputs are the pair (x, E(x)).
  """
  grads = jax.grad(lambda *inputs: jnp.sum(discriminator(*inputs)),
                   argnums=tuple(range(len(real_inputs))))(*real_inputs)
  per_example = sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in grads)
  return jnp.mean(per_example)


def latent_regression_loss(predicted: jax.Array, z: jax.Array, prior: str) -> jax.Array:
  """The latent regressor's loss of predicting z from G(z), averaged over examples and dims.

  For a uniform prior on (-1, 1), the BiGAN paper's sigmoid cross entropy: `predicted` are
  logits and the targets (z + 1) / 2 lie in (0, 1). For a normal prior, the squared error.
  Averaging over the latent dimensions (the official code's `--encode_normalize`) keeps the
  loss's scale, and so JLR's weight on it, independent of the latent size.
  """
  if prior == "uniform":
    targets = (z + 1.0) / 2.0
    # Cross entropy of sigmoid(p) against t: softplus(p) - t * p, minus the entropy of t so
    # that a perfect prediction scores 0 (the gradient is unchanged).
    entropy = -(xlogy(targets, targets) + xlogy(1.0 - targets, 1.0 - targets))
    per_dim = jax.nn.softplus(predicted) - targets * predicted - entropy
  else:
    per_dim = (predicted - z) ** 2
  return jnp.mean(per_dim)


def reconstruction_loss(x: jax.Array, x_hat: jax.Array, kind: str) -> jax.Array:
  """Mean over examples of the squared L2 ("l2") or the L1 ("l1") reconstruction error."""
  difference = (x - x_hat).reshape(x.shape[0], -1)
  if kind == "l2":
    return jnp.mean(jnp.sum(difference**2, axis=1))
  if kind == "l1":
    return jnp.mean(jnp.sum(jnp.abs(difference), axis=1))
  raise ConfigError(f"config.reconstruction_loss={kind!r}: allowed {RECONSTRUCTION_LOSSES}")


def score_losses(real_scores: Mapping[str, jax.Array], fake_scores: Mapping[str, jax.Array]
                 ) -> tuple[jax.Array, jax.Array]:
  """BigBiGAN's (D loss, E/G loss) over the scores the discriminator gives (any of "x", "z",
  "xz"; the unary switches decide which).

  D: the mean over real pairs (y = +1) and fake pairs (y = -1) of sum_s max(0, 1 - y s).
  E and G: the mean of sum_s y s (linear, no hinge), which they minimise.
  """
  if set(real_scores) != set(fake_scores) or not real_scores:
    raise ValueError(f"real and fake pairs need the same scores, got {sorted(real_scores)} "
                     f"and {sorted(fake_scores)}")
  d_loss = sum(discriminator_loss(real_scores[name], fake_scores[name], "hinge")
               for name in real_scores)
  eg_loss = sum(generator_encoder_loss(real_scores[name], fake_scores[name], "hinge")
                for name in real_scores)
  return d_loss, eg_loss


def off_diagonal_gram_energy(w: jax.Array) -> jax.Array:
  """||W^T W * (1 - I)||_F^2 of W [m, n], from the smaller of the two Gram matrices.

  W^T W is [n, n] and W W^T [m, m]; they share their squared Frobenius norm (both are
  trace((W^T W)^2)), and W^T W's diagonal holds the columns' squared norms, so where n > m

      ||W^T W * (1 - I)||_F^2 = ||W W^T||_F^2 - sum_j ||w_j||^4,

  which needs m x m entries and about m^2 n multiply-adds, not n x n and n^2 m: for BigGAN's
  first dense kernel at 128 pixels, [20, 24576], a 20 x 20 Gram instead of 24576 x 24576
  (2.4 GB in float32). Value and gradient (4 W (W^T W * (1 - I))) are those of the direct
  formula, up to rounding.
  """
  rows, columns = w.shape
  if columns <= rows:
    gram = w.T @ w
    return jnp.sum((gram * (1.0 - jnp.eye(columns, dtype=w.dtype))) ** 2)
  squared_norms = jnp.sum(w * w, axis=0)
  return jnp.sum((w @ w.T) ** 2) - jnp.sum(squared_norms ** 2)


def orthogonal_regularisation(params, beta: float = 1e-4) -> jax.Array:
  """BigGAN's orthogonal regularisation: beta * sum over weights of ||W^T W * (1 - I)||_F^2.

  Each "kernel" leaf (Dense and conv weights; not biases, gains or embeddings) is seen as a
  matrix W [fan_in, out] (spatial and input axes flattened), so W^T W holds the inner
  products of its output filters: only their pairwise cosines are pushed to 0, not their
  norms (unlike full orthogonality). Each is computed from its smaller Gram matrix
  (`off_diagonal_gram_energy`).

  beta's convention is the BigGAN paper's formula, R_beta(W) = beta ||W^T W * (1 - I)||_F^2,
  added to G's loss and differentiated: its gradient is 4 beta W (W^T W * (1 - I)).
  BigGAN-PyTorch's `ortho(model, strength)` adds 2 strength (W W^T * (1 - I)) W to the
  gradient in PyTorch's [out, fan_in] layout, the gradient of (strength / 2) ||.||_F^2: its
  strength 1e-4 is beta 5e-5 here. The configs' 1e-4 is the paper's beta, as written.
  """
  total = jnp.zeros((), jnp.float32)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if getattr(path[-1], "key", None) != "kernel":
      continue
    total = total + off_diagonal_gram_energy(leaf.reshape(-1, leaf.shape[-1]).astype(jnp.float32))
  return beta * total
