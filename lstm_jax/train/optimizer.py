"""The one optimizer builder: global-norm clipping followed by a named optax optimizer.

``make_optimizer(config.optimizer)`` serves a single run and the benchmarks; ``member_optimizer`` builds the same
chain with its learning rate and clipping threshold held as arrays in the optimizer state
(``optax.inject_hyperparams``), so that population members (``lstm_jax.sweeps.population``) share one compiled step.
"""

from __future__ import annotations

import math

import ml_collections
import optax

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "warmup_cosine", "warmup_linear", "warmup_exponential")


def learning_rate_schedule(opt_config: ml_collections.ConfigDict, peak):
  """The learning rate as an optax schedule of the step, peaking at ``peak`` (a float or a member's array).

  ``constant`` (the book's runs): ``peak`` itself. The others ramp linearly from 0 over ``warmup_steps`` (0: no
  warm-up), then decay over ``decay_steps`` to ``end_fraction * peak`` (cosine or linear), or by ``decay_rate`` every
  ``decay_steps`` (exponential, floored at ``end_fraction * peak``).
  """
  name = opt_config.get("schedule", "constant")
  if name == "constant":
    return peak
  warmup, decay = opt_config.get("warmup_steps", 0), opt_config.get("decay_steps", 1000)
  end = opt_config.get("end_fraction", 0.0) * peak
  if name == "warmup_cosine":
    after = optax.cosine_decay_schedule(peak, decay, alpha=opt_config.get("end_fraction", 0.0))
  elif name == "warmup_linear":
    after = optax.linear_schedule(peak, end, decay)
  elif name == "warmup_exponential":
    after = optax.exponential_decay(peak, decay, opt_config.get("decay_rate", 0.5), end_value=end)
  else:
    raise ValueError(f"Unknown optimizer.schedule {name!r}; choose one of {SCHEDULES}.")
  if warmup <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def base_optimizer(name: str, learning_rate, weight_decay: float = 0.0) -> optax.GradientTransformation:
  """The named optax optimizer at ``learning_rate`` (a float, an array or an optax schedule)."""
  if name == "sgd":
    return optax.sgd(learning_rate)
  if name == "momentum":
    return optax.sgd(learning_rate, momentum=0.9)
  if name == "adamw":
    return optax.adamw(learning_rate, weight_decay=weight_decay)
  if name in ("adam", "rmsprop", "adagrad"):
    return getattr(optax, name)(learning_rate)
  raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS} (--config.optimizer.name=NAME).")


def make_optimizer(opt_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping (when ``clip_norm > 0``) followed by the named optimizer."""
  base = base_optimizer(opt_config.name, learning_rate_schedule(opt_config, opt_config.learning_rate),
                        opt_config.get("weight_decay", 0.0))
  if opt_config.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(opt_config.clip_norm), base)
  return base


def member_optimizer(opt_config: ml_collections.ConfigDict):
  """``factory(learning_rate, clip_norm) -> optax transform`` whose two hyperparameters live in the optimizer state
  as arrays. ``clip_norm=inf`` means no clipping (``select(norm < inf, g, ...)`` returns ``g``)."""
  name, weight_decay = opt_config.name, opt_config.get("weight_decay", 0.0)
  base_optimizer(name, 0.0, weight_decay)  # an unknown name fails here, before anything is traced

  def factory(learning_rate, clip_norm):
    schedule = learning_rate_schedule(opt_config, learning_rate)  # each member's own peak rate
    return optax.chain(optax.clip_by_global_norm(clip_norm), base_optimizer(name, schedule, weight_decay))

  return optax.inject_hyperparams(factory)


def member_clip_norm(clip_norm: float) -> float:
  """A config's ``clip_norm`` as a member's array value (``<= 0``, no clipping, becomes ``inf``)."""
  return clip_norm if clip_norm > 0 else math.inf


def single_run_opt_state(member_opt_state, clip_norm: float):
  """The optimizer state ``make_optimizer`` would hold for a member's: the inner chain, without the clip stage if
  clipping is off."""
  inner = member_opt_state.inner_state
  return inner if clip_norm > 0 else inner[1]
