"""What the tests of the Flax forms (``test_linen``, ``test_nnx``) share: the shapes, random inputs and params in a
family's own tree, the scratch layer batch-major, a loss that sees every output and carry, and a tree comparison."""

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import cells

B, T, IN, H = 3, 6, 5, 4
TOL = dict(rtol=1e-5, atol=1e-6)
FAMILY_NAMES = sorted(cells.FAMILIES)


def inputs(seed=0, shape=(B, T, IN)):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def random_params(family, seed=1, scale=0.5):
  """N(0, scale^2) values in the family's own tree structure (nonzero biases exercise every term)."""
  shapes = jax.eval_shape(lambda k: family.init_params(k, IN, H, "d2l"), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def scratch(family, params, xs_BTI, carry=None):
  """The scratch layer, batch-major in and out."""
  xs_TBI = jnp.swapaxes(xs_BTI, 0, 1)
  if carry is None:
    carry = family.zero_carry(xs_BTI.shape[0], H)
  carry, hs_TBH = family.recurrence(params, family.project_inputs(params, xs_TBI), carry)
  return carry, jnp.swapaxes(hs_TBH, 0, 1)


def loss(carry, outputs):
  return jnp.sum(jnp.sin(3.0 * outputs)) + sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(carry))


def assert_trees_close(got, want, **tol):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **(tol or TOL)), got, want)
