"""Errors chat-gateway raises on purpose.

GatewayError            .user_message is safe to post; str(exc) is for the log
├── ConfigError         bad or missing settings; the CLI prints it and exits 2
├── StoreError
│   ├── StoreUnavailableError   Redis/SQLite did not answer; nothing was written
│   └── CorruptHistoryError     stored data that is not our JSON
└── ModelError          the chat model failed (timeout, rejected, 5xx, malformed)
    ├── ModelTimeoutError
    └── ModelRejectedError      bad key, unknown model
        ├── ContextTooLongError the request is longer than the model's context window
        └── ImagesRefusedError  a model without vision refused the image parts
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContextTooLongError",
    "CorruptHistoryError",
    "GatewayError",
    "ImagesRefusedError",
    "ModelError",
    "ModelRejectedError",
    "ModelTimeoutError",
    "StoreError",
    "StoreUnavailableError",
]


class GatewayError(Exception):
    """Base of every error raised on purpose; `user_message` never leaks internals."""

    user_message = "Sorry, something went wrong on my side. Please try again."


class ConfigError(GatewayError):
    """A setting is missing or invalid; the message names the variable and what is allowed."""

    user_message = "The gateway is misconfigured. The operator has been told."


class StoreError(GatewayError):
    """The conversation store failed."""

    user_message = "My memory had a problem, so I saved nothing. Please retry shortly."


class StoreUnavailableError(StoreError):
    """The store did not answer in time; nothing was written."""

    user_message = "My memory is unreachable right now, so I saved nothing. Please retry shortly."


class CorruptHistoryError(StoreError):
    """Stored data could not be read back as a chat message."""


class ModelError(GatewayError):
    """The chat model failed; nothing was stored for this turn."""

    user_message = "The language model did not answer properly, so I saved nothing. Please try again."


class ModelTimeoutError(ModelError):
    """The model did not answer within the configured time."""

    user_message = "The language model took too long to answer, so I saved nothing. Please try again."


class ModelRejectedError(ModelError):
    """The model refused the request for a reason retrying will not fix."""

    user_message = "The language model rejected the request. The operator has been told."


class ContextTooLongError(ModelRejectedError):
    """The model refused the request for its length; the agent then retries once with less history."""

    user_message = (
        "This message and our conversation are too long for the language model, so I saved nothing. "
        "Please send something shorter, or `reset` the conversation."
    )


class ImagesRefusedError(ModelRejectedError):
    """The model cannot take images; the agent then retries once without them."""

    user_message = "This language model cannot see images. Please describe the image in words."
