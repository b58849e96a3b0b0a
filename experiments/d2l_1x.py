"""The Time Machine rows of d2l-en 1.0.x, book_tables.md section 0.4 (its JAX/Flax tab is the closest JAX reference).

The config lives in the package (``lstm_jax/d2l/experiments/d2l_1x.py``, where its docstring gives the variants,
the book's numbers and the command), so an installed wheel can run the report; this file is what users
pass as ``--config experiments/d2l_1x.py:VARIANT``.
"""

from lstm_jax.d2l.experiments.d2l_1x import get_config  # noqa: F401
