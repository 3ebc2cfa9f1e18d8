"""Redis key names. The scheme is ARCHITECTURE.md's: change both together.

Every key of one thread carries the hash tag `{<thread_id>}`, so a thread lives in one Redis Cluster
slot and its multi-key operations stay atomic. Thread IDs never hold `{` or `}` (core.threads escapes
them), so the tag always closes where we mean it to.
"""

from __future__ import annotations

__all__ = ["event_key", "lock_key", "message_key", "thread_prefix", "writes_key"]


def thread_prefix(key_prefix: str, namespace: str | None, thread_id: str) -> str:
    if "{" in thread_id or "}" in thread_id:
        raise ValueError(f"thread IDs must not contain braces (they delimit the hash tag): {thread_id!r}")
    middle = f"{namespace}:" if namespace else ""
    return f"{key_prefix}:{middle}{{{thread_id}}}"


def message_key(key_prefix: str, namespace: str | None, thread_id: str) -> str:
    """`<prefix>:<platform>:{<thread_id>}:messages`, the LIST of JSON messages."""
    return f"{thread_prefix(key_prefix, namespace, thread_id)}:messages"


def writes_key(key_prefix: str, namespace: str | None, thread_id: str) -> str:
    """`<prefix>:<platform>:{<thread_id>}:writes`, IDs of the latest writes: a retried write is not stored twice."""
    return f"{thread_prefix(key_prefix, namespace, thread_id)}:writes"


def lock_key(key_prefix: str, namespace: str | None, thread_id: str) -> str:
    """`<prefix>:<platform>:{<thread_id>}:lock`, the turn lock."""
    return f"{thread_prefix(key_prefix, namespace, thread_id)}:lock"


def event_key(key_prefix: str, namespace: str | None, event_id: str) -> str:
    """`<prefix>:<platform>:event:<event_id>`, the idempotency claim."""
    middle = f"{namespace}:" if namespace else ""
    return f"{key_prefix}:{middle}event:{event_id}"
