"""One optax optimizer per network, built from `config.optimizer`.

Adam with an optional L2 weight decay added to the gradient (the BiGAN paper's "l2 weight
decay" is a penalty in the loss, so it goes before Adam's normalisation, unlike AdamW) and an
optional linear learning-rate decay over the last part of training.

The schedules are laid out in iterations (`config.total_steps`), while optax counts each
optimizer's own updates: D updates `d_steps` times an iteration (BigBiGAN's two D steps per
E/G step), so its schedule reads its count divided by `d_steps`, and its rate at iteration i
is G's and E's at iteration i.
"""

import ml_collections
import optax


def learning_rate_schedule(base: float, total_steps: int, decay_start_fraction: float,
                           final_scale: float) -> optax.Schedule:
  """Constant `base`, then linear decay to `base * final_scale` from the given fraction on."""
  decay_start = int(round(total_steps * decay_start_fraction))
  if decay_start >= total_steps:
    return optax.constant_schedule(base)
  return optax.join_schedules(
      [optax.constant_schedule(base),
       optax.linear_schedule(base, base * final_scale, total_steps - decay_start)],
      [decay_start])


def learning_rate_schedules(config: ml_collections.ConfigDict) -> dict[str, optax.Schedule]:
  """{'generator', 'encoder', 'discriminator'} -> that network's learning rate as a function
  of its optimizer's update count."""
  opt = config.optimizer
  rates = {
      "generator": opt.generator_learning_rate,
      "encoder": opt.generator_learning_rate * opt.encoder_learning_rate_multiplier,
      "discriminator": opt.discriminator_learning_rate,
  }
  # D's updates per iteration: BigBiGAN's D steps (the MLP families update D once).
  updates_per_iteration = {"discriminator": config.get("d_steps", 1)}
  schedules = {}
  for name, rate in rates.items():
    per_iteration = learning_rate_schedule(rate, config.total_steps,
                                           opt.lr_decay_start_fraction, opt.lr_decay_final_scale)
    every = updates_per_iteration.get(name, 1)
    schedules[name] = (per_iteration if every == 1 else
                       lambda count, schedule=per_iteration, every=every: schedule(count // every))
  return schedules


def make_optimizers(config: ml_collections.ConfigDict) -> dict[str, optax.GradientTransformation]:
  """Returns {'generator', 'encoder', 'discriminator'} -> optimizer."""
  opt = config.optimizer

  def make(schedule: optax.Schedule) -> optax.GradientTransformation:
    adam = optax.adam(schedule, b1=opt.b1, b2=opt.b2)
    if opt.weight_decay:
      return optax.chain(optax.add_decayed_weights(opt.weight_decay), adam)
    return adam

  return {name: make(schedule) for name, schedule in learning_rate_schedules(config).items()}
