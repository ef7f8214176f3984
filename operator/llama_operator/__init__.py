"""llama-operator: places Llama training and inference on Neuron, GPU or CPU pools by cost and capacity."""

__version__ = "0.1.0"
