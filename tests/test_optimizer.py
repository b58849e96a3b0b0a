"""The one optimizer builder: the book's constant rate, learning-rate schedules through optax, and population
members that keep their own peak rate under a shared schedule."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstm_jax import config as config_lib
from lstm_jax.train import optimizer


def _config(**fields):
  c = config_lib.default_config().optimizer
  c.clip_norm = 0.0
  c.update(fields)
  return c


def _rates(transform, steps):
  """The SGD step sizes over ``steps`` updates of a unit gradient."""
  params, grads = jnp.zeros(()), jnp.ones(())
  state, rates = transform.init(params), []
  for _ in range(steps):
    updates, state = transform.update(grads, state, params)
    rates.append(-float(updates))
  return np.asarray(rates)


def test_constant_is_the_book_rate_at_every_step():
  np.testing.assert_allclose(_rates(optimizer.make_optimizer(_config(learning_rate=2.0)), 5), 2.0)


@pytest.mark.parametrize("schedule", ["warmup_cosine", "warmup_linear", "warmup_exponential"])
def test_schedules_warm_up_then_decay_to_the_end_fraction(schedule):
  c = _config(learning_rate=1.0, schedule=schedule, warmup_steps=4, decay_steps=8, end_fraction=0.1,
              decay_rate=0.5)
  rates = _rates(optimizer.make_optimizer(c), 60)
  np.testing.assert_allclose(rates[:5], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)  # linear warm-up to the peak
  assert np.all(np.diff(rates[4:]) <= 1e-7)                                     # then never rising
  np.testing.assert_allclose(rates[-1], 0.1, atol=1e-6)                          # and ending at 10% of the peak
  if schedule == "warmup_exponential":
    np.testing.assert_allclose(rates[4 + 8], 0.5, atol=1e-6)                     # halves every decay_steps


def test_members_keep_their_own_peak_under_one_schedule():
  c = _config(schedule="warmup_linear", warmup_steps=2, decay_steps=4)
  factory = optimizer.member_optimizer(c)
  for peak in (1.0, 3.0):
    member = factory(jnp.asarray(peak), jnp.asarray(np.inf))
    single = optimizer.make_optimizer(_config(learning_rate=peak, schedule="warmup_linear", warmup_steps=2,
                                              decay_steps=4))
    np.testing.assert_allclose(_rates(member, 8), _rates(single, 8), rtol=1e-6)


def test_unknown_schedule_is_refused():
  with pytest.raises(ValueError, match="Unknown optimizer.schedule"):
    optimizer.make_optimizer(_config(schedule="cyclic"))
