"""Typed errors of ray-logme.

Every error a user can cause derives from :class:`RayLogMEError`, so the pipeline can record it
against one (model, task) pair and carry on with the rest of the run. Messages name the model,
task, file or key at fault and say how to fix it.
"""

from __future__ import annotations


class RayLogMEError(Exception):
    """Base class of every error ray-logme raises on purpose."""


class ConfigError(RayLogMEError, ValueError):
    """The run configuration is invalid (unknown key, bad URI, empty model list, ...)."""


class ModelLoadError(RayLogMEError):
    """A model could not be turned into a feature extractor."""


class UnknownModelError(ModelLoadError):
    """The hub does not know the model name (the message lists the closest names)."""


class RemoteCodeNotAllowedError(ModelLoadError):
    """The model needs ``trust_remote_code`` and the run config does not allowlist it."""


class CheckpointError(ModelLoadError):
    """A checkpoint is missing, corrupt, or in a format that is not allowed (pickle)."""


class ModalityMismatchError(RayLogMEError):
    """A model was asked to embed inputs of a modality it cannot read (text model, image task)."""


class TaskError(RayLogMEError, ValueError):
    """A downstream task cannot be read: missing columns, bad labels, undecodable inputs."""


class StorageError(RayLogMEError):
    """Object storage is unreachable, denies access, or the URI scheme is unsupported."""


class FeatureError(RayLogMEError):
    """A model produced unusable features (NaN/Inf) for a task."""


class RunFailedError(RayLogMEError):
    """The run could not complete (its record says ``state: failed``); it can be resumed."""
