"""Accelerator kernels of the recurrences (Pallas) and the cuDNN library path."""
