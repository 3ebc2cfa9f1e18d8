"""A store's serialized state: where its thread lives, shared by both backends so the two never drift.

Holds the thread ID, key prefix, namespace and limits; never messages, URLs, paths or passwords.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["STATE_FIELDS", "ThreadState"]

STATE_FIELDS = ("thread_id", "key_prefix", "namespace", "max_messages", "ttl_seconds")


class ThreadState:
    """Mixed into a store that keeps these attributes and rebuilds its keys in `_bind_keys()`."""

    state_type: ClassVar[str]
    thread_id: str
    key_prefix: str
    namespace: str | None
    max_messages: int | None
    ttl_seconds: int | None

    def _bind_keys(self) -> None:
        raise NotImplementedError

    async def serialize(self, **kwargs: Any) -> dict[str, Any]:
        """The thread's metadata, enough to find it again."""
        return {"type": self.state_type, **{name: getattr(self, name) for name in STATE_FIELDS}}

    async def update_from_state(self, state: dict[str, Any]) -> None:
        """Point this store at the thread `state` names (as `AgentThread.deserialize` does)."""
        self.thread_id = str(state["thread_id"])
        self.key_prefix = str(state.get("key_prefix") or self.key_prefix)
        self.namespace = state.get("namespace", self.namespace)
        self.max_messages = state.get("max_messages", self.max_messages)
        self.ttl_seconds = state.get("ttl_seconds", self.ttl_seconds)
        self._bind_keys()
