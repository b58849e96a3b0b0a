"""The Time Machine rows of d2l-en 0.7-0.17.x and d2l-zh 2.0, book_tables.md section 0.3 (500 epochs each).

The config lives in the package (``lstm_jax/d2l/experiments/d2l_0x.py``, where its docstring gives the variants,
the book's numbers and the command), so an installed wheel can run the report; this file is what users
pass as ``--config experiments/d2l_0x.py:VARIANT``.
"""

from lstm_jax.d2l.experiments.d2l_0x import get_config  # noqa: F401
