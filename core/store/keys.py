"""Redis key names, built and parsed here only. The scheme is ARCHITECTURE.md's: change both together.

Every key of one conversation carries the hash tag `{<thread_id>}`, so a conversation lives in one
Redis Cluster slot and each step of a turn (intake, commit, finish) is one atomic script over its keys.
Thread IDs never hold `{` or `}` (core.threads escapes them), so the tag always closes where we mean it to.

    <prefix>:<ns>:{<thread_id>}:messages   LIST of the conversation's JSON messages, oldest first
    <prefix>:<ns>:{<thread_id>}:writes     LIST of recent write IDs: a retried write is not stored twice
    <prefix>:<ns>:{<thread_id>}:inbox      STREAM of messages not yet delivered; group `turns` holds the lease
    <prefix>:<ns>:{<thread_id>}:turns      HASH message key -> the turn's record (state, reply, what was posted)
    <prefix>:<ns>:{<thread_id>}:seen       ZSET message key -> arrival (ms): records older than the dedupe TTL go
    <prefix>:<ns>:{<thread_id>}:rate       HASH user -> hits in the current window (per-conversation rate limit)
    <prefix>:<ns>:{<thread_id>}:reset      STRING epoch seconds of the last `reset`: platform context older than it
                                           is never seeded (outlives the history: RESET_WATERMARK_SECONDS)
    <prefix>:<ns>:inboxes                  ZSET thread ID -> when to look at its inbox again (ms): recovery's index
    <prefix>:<ns>:approval:{<approval_id>} HASH one pending or decided approval (state, who decided, ran)
    <prefix>:flag:<name>                   a flag an adapter keeps (Slack: threads the bot takes part in)
    <prefix>:flag:paused:<ns>:<channel>    set while an admin has paused the bot in that channel (no TTL)
    <prefix>:usage:{usage-<day>}:<scope>:<platform>:<id>  HASH one user's, channel's or workspace's tokens that
                                           UTC day: `<model>|prompt`, `<model>|completion`, `<model>|estimated`,
                                           `turns`, and `charged` (budget scopes: settled turns + open reservations)
    <prefix>:usage:{usage-<day>}:<scope>   ZSET `<platform>:<id>` -> tokens that day: the scope's index (top users)

An approval's key carries its own ID as hash tag, not the conversation's: a click names only the approval
(a Discord custom_id holds 100 characters), and each step on it (decide, claim the run) is one script on
that one key, never together with the conversation's keys.

Usage counters carry the UTC day as hash tag. They add up turns of many conversations, so they can never
share a conversation's slot (nor go into its COMMIT script): they are written right after the commit,
in one script over the day's keys. One tag per day puts every counter a turn touches (user, channel,
workspace, their indexes) and a budget reservation (user and workspace together) in one slot, so each of
those steps is one atomic script on a Cluster too; the price is that one day's counters live on one node,
one small write per turn.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConversationKeys",
    "approval_key",
    "conversation_pattern",
    "flag_key",
    "inbox_index_key",
    "is_reset_key",
    "message_key",
    "parse_conversation_key",
    "parse_message_key",
    "paused_flag",
    "reset_key",
    "thread_prefix",
    "threads_pattern",
    "usage_index_key",
    "usage_key",
    "usage_member",
    "parse_usage_member",
    "writes_key",
]


def thread_prefix(key_prefix: str, namespace: str | None, thread_id: str) -> str:
    if "{" in thread_id or "}" in thread_id:
        raise ValueError(f"thread IDs must not contain braces (they delimit the hash tag): {thread_id!r}")
    middle = f"{namespace}:" if namespace else ""
    return f"{key_prefix}:{middle}{{{thread_id}}}"


def message_key(key_prefix: str, namespace: str | None, thread_id: str) -> str:
    return f"{thread_prefix(key_prefix, namespace, thread_id)}:messages"


def reset_key(key_prefix: str, namespace: str | None, thread_id: str) -> str:
    """The conversation's reset watermark; not in `ConversationKeys.all()`: only COMMIT and its readers use it."""
    return f"{thread_prefix(key_prefix, namespace, thread_id)}:reset"


def is_reset_key(key: str) -> bool:
    """A reset watermark alone is no stored conversation (it outlives the conversation's other keys)."""
    return key.endswith(":reset")


def writes_key(key_prefix: str, namespace: str | None, thread_id: str) -> str:
    return f"{thread_prefix(key_prefix, namespace, thread_id)}:writes"


@dataclass(frozen=True, slots=True)
class ConversationKeys:
    """All keys of one conversation (one slot), in the order the scripts take them."""

    messages: str
    writes: str
    inbox: str
    turns: str
    seen: str
    rate: str

    @classmethod
    def of(cls, key_prefix: str, namespace: str | None, thread_id: str) -> ConversationKeys:
        base = thread_prefix(key_prefix, namespace, thread_id)
        return cls(*(f"{base}:{part}" for part in ("messages", "writes", "inbox", "turns", "seen", "rate")))

    def all(self) -> list[str]:
        return [self.messages, self.writes, self.inbox, self.turns, self.seen, self.rate]


def inbox_index_key(key_prefix: str, namespace: str | None) -> str:
    middle = f"{namespace}:" if namespace else ""
    return f"{key_prefix}:{middle}inboxes"


def approval_key(key_prefix: str, namespace: str | None, approval_id: str) -> str:
    if "{" in approval_id or "}" in approval_id:
        raise ValueError(f"approval IDs must not contain braces: {approval_id!r}")
    middle = f"{namespace}:" if namespace else ""
    return f"{key_prefix}:{middle}approval:{{{approval_id}}}"


def usage_index_key(key_prefix: str, day: str, scope: str) -> str:
    """The day's index of one scope (user, channel, workspace): members `usage_member`, scored by tokens."""
    return f"{key_prefix}:usage:{{usage-{day}}}:{scope}"


def usage_member(platform: str, subject_id: str) -> str:
    if "{" in subject_id or "}" in subject_id or "{" in platform or ":" in platform:
        raise ValueError(f"usage subjects must not hold braces: {platform!r} {subject_id!r}")
    return f"{platform}:{subject_id}"


def parse_usage_member(member: str) -> tuple[str, str] | None:
    """(platform, subject ID) of an index member; None for anything else."""
    platform, colon, subject_id = member.partition(":")
    return (platform, subject_id) if colon and platform and subject_id else None


def usage_key(key_prefix: str, day: str, scope: str, platform: str, subject_id: str) -> str:
    """One subject's counters of one UTC day (`day` as YYYY-MM-DD)."""
    return f"{usage_index_key(key_prefix, day, scope)}:{usage_member(platform, subject_id)}"


def flag_key(key_prefix: str, name: str) -> str:
    return f"{key_prefix}:flag:{name}"


def paused_flag(namespace: str, channel_id: str) -> str:
    """The flag name (see `flag_key`) of a channel an admin paused: `admin pause` sets it, `admin resume` clears it."""
    return f"paused:{namespace}:{channel_id}"


def threads_pattern(key_prefix: str, namespace: str | None, match: str | None) -> str:
    """The SCAN pattern of message lists: every stored conversation (of `namespace`, matching `match`)."""
    middle = f"{namespace}:" if namespace else "*"
    return f"{key_prefix}:{middle}{{{match or '*'}}}:messages"


def parse_message_key(key: str, key_prefix: str) -> tuple[str | None, str] | None:
    """(namespace, thread_id) of a message list's key; None for any other key."""
    head, brace, rest = key.partition("{")
    thread_id, _, tail = rest.partition("}")
    if not brace or tail != ":messages" or not head.startswith(f"{key_prefix}:"):
        return None
    return head[len(key_prefix) + 1 : -1] or None, thread_id


def _glob_escape(text: str) -> str:
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


def conversation_pattern(key_prefix: str, thread_id: str) -> str:
    """The SCAN pattern of every key of conversation `thread_id`, in every namespace (and none)."""
    return f"{_glob_escape(key_prefix)}:*{{{_glob_escape(thread_id)}}}:*"


def parse_conversation_key(key: str, key_prefix: str) -> tuple[str | None, str] | None:
    """(namespace, thread_id) of any key of a conversation (`...:{<thread_id>}:<part>`); None for others."""
    head, brace, rest = key.partition("{")
    thread_id, close, tail = rest.partition("}")
    if not brace or not close or not tail.startswith(":") or not head.startswith(f"{key_prefix}:"):
        return None
    return head[len(key_prefix) + 1 : -1] or None, thread_id
