"""The shared PyTorch runtime that llama-operator's worker pods run (CPU, CUDA, Neuron)."""

__version__ = "0.1.0"
