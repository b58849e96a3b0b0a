"""Pallas kernels of the recurrences (GPU: Triton, including the persistent LSTM; TPU: Mosaic), their layout and
envelope. cuDNN's LSTM is a model form: ``lstm_jax.models.cudnn``."""
