"""The Jay Chou lyrics rows of d2l-zh 1.x (MXNet), book_tables.md section 0.1.

The config lives in the package (``lstm_jax/d2l/experiments/d2l_jaychou.py``, where its docstring gives the variants,
the book's numbers and the command), so an installed wheel can run the report; this file is what users
pass as ``--config experiments/d2l_jaychou.py:VARIANT``.
"""

from lstm_jax.d2l.experiments.d2l_jaychou import get_config  # noqa: F401
