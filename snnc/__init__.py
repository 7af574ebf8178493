"""snnc: a compiler from trained spiking neural networks to Loihi-style hardware."""
__version__ = "0.1.0"
