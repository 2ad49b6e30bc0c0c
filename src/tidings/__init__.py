"""tidings: durable, signed webhook and event delivery."""

__version__ = "0.1.0"
