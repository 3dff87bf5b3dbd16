"""Fetching one file from the Hugging Face Hub (or its local cache), with errors that say why.

Both adapters (timm's ``hf-hub:`` models and transformers models) fetch through
:func:`hub_download`, so a missing repo, revision or file, an unreachable Hub and an empty cache
read the same for every model. Imports ``huggingface_hub`` only when called.
"""

from __future__ import annotations

from ray_logme.errors import CheckpointError, ModelLoadError, UnknownModelError


def hub_cache_hint() -> str:
    """The Hugging Face cache folder, quoted (where pre-fetched files must be)."""
    from huggingface_hub import constants

    return repr(str(constants.HF_HUB_CACHE))


def hub_download(
    owner: str,
    repo: str,
    filename: str,
    revision: str | None,
    *,
    is_model_repo: bool = True,
    offline_error: type[ModelLoadError] = CheckpointError,
) -> str:
    """Local path of ``filename`` of Hub repo ``repo`` at ``revision`` (downloaded or cached).

    ``owner`` names the model in messages (``"timm model 'x'"``). A repo that does not exist is an
    :class:`UnknownModelError` when it is the model's own repo (``is_model_repo``), else a
    :class:`CheckpointError`; an unknown revision or an invalid repo id is an
    ``UnknownModelError``; a file the repo lacks is a ``CheckpointError``; a file that is not
    cached while the Hub cannot be reached raises ``offline_error``.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return hf_hub_download(repo, filename, revision=revision)
    except RepositoryNotFoundError as exc:
        error = UnknownModelError if is_model_repo else CheckpointError
        raise error(f"{owner}: Hugging Face repo {repo!r} not found: {exc}") from exc
    except RevisionNotFoundError as exc:
        raise UnknownModelError(f"{owner}: revision {revision!r} not found in {repo!r}") from exc
    except HFValidationError as exc:
        raise UnknownModelError(
            f"{owner}: {repo!r} is neither a local folder nor a valid Hub repo id: {exc}"
        ) from exc
    except LocalEntryNotFoundError as exc:  # offline / not cached, not "missing on the Hub"
        raise offline_error(
            f"{owner}: {filename!r} of {repo!r} is not a local folder and not in the Hugging Face "
            f"cache {hub_cache_hint()}, and the Hub cannot be reached (offline?); check the name "
            f"or pre-fetch it: {exc}"
        ) from exc
    except EntryNotFoundError as exc:
        raise CheckpointError(f"{owner}: {repo!r} has no file {filename!r}") from exc
    except OSError as exc:  # connection errors (HfHubHTTPError is an OSError)
        raise CheckpointError(
            f"{owner}: could not fetch {filename!r} of {repo!r} from the Hugging Face Hub "
            f"(offline, or not in the cache {hub_cache_hint()}): {exc}"
        ) from exc
