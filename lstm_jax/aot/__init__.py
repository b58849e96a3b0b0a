"""Ahead-of-time compilation for chips this machine does not have (``lstm-jax-compile``): ``targets`` turns names
(``h100``, ``v5e:1x1``, ...) into compile-only devices, ``compile`` compiles the run's own programs for them and
formats the result, ``check`` is the command's work for a config. Needs the ``aot`` extra (``pip install -e
'.[aot]'``, Python 3.12+)."""
