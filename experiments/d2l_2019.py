"""The Time Machine rows of early-2019 d2l-en (MXNet), book_tables.md section 0.2 (the main job is the LSTM scratch row).

The config lives in the package (``lstm_jax/d2l/experiments/d2l_2019.py``, where its docstring gives the variants,
the book's numbers and the command), so an installed wheel can run the report; this file is what users
pass as ``--config experiments/d2l_2019.py:VARIANT``.
"""

from lstm_jax.d2l.experiments.d2l_2019 import get_config  # noqa: F401
