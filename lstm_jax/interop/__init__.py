"""Converters between our parameter trees and other libraries' layouts (Flax, PyTorch, cuDNN)."""
