"""The book's experiment configs, one file per table (the rows of ``lstm_jax.d2l.rows`` name them)."""
