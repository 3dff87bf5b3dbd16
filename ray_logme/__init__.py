"""ray-logme: rank pre-trained models for downstream tasks with LogME, on Ray."""

__version__ = "0.1.0"
