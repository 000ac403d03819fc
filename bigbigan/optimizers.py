"""One optax optimizer per network, built from `config.optimizer`.

Adam with an optional L2 weight decay added to the gradient (the BiGAN paper's "l2 weight
decay" is a penalty in the loss, so it goes before Adam's normalisation, unlike AdamW) and an
optional linear learning-rate decay over the last part of training.
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


def make_optimizers(config: ml_collections.ConfigDict) -> dict[str, optax.GradientTransformation]:
  """Returns {'generator', 'encoder', 'discriminator'} -> optimizer."""
  opt = config.optimizer
  rates = {
      "generator": opt.generator_learning_rate,
      "encoder": opt.generator_learning_rate * opt.encoder_learning_rate_multiplier,
      "discriminator": opt.discriminator_learning_rate,
  }

  def make(rate: float) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(rate, config.total_steps, opt.lr_decay_start_fraction,
                                      opt.lr_decay_final_scale)
    adam = optax.adam(schedule, b1=opt.b1, b2=opt.b2)
    if opt.weight_decay:
      return optax.chain(optax.add_decayed_weights(opt.weight_decay), adam)
    return adam

  return {name: make(rate) for name, rate in rates.items()}
