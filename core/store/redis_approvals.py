"""Approval records in Redis: one HASH per approval (`keys.approval_key`), each step one script on it.

Fields: `data` (JSON, fixed at creation), `state`, `by` (who decided), `ran` ("1" once its tool was claimed
for running), `prompt` (the platform message showing it), `expires` (ms since the epoch).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

from redis.exceptions import RedisError

from core.store.approvals import ApprovalRecord, ApprovalState, Decided
from core.store.keys import approval_key
from core.store.redis import translate_redis_error
from core.store.topology import RedisClient

__all__ = ["RedisApprovals"]

_ALL = "return redis.call('HGETALL', KEYS[1])"

# ARGV: data, expires ms, keep ms. Creates the record unless it exists; returns it either way.
CREATE = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'data', ARGV[1], 'state', 'pending', 'by', '', 'ran', '0', 'prompt', '',
             'expires', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
"""
    + _ALL
)

# ARGV: state, user, now ms, then the approvers. Returns {outcome, fields...}.
DECIDE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local function reply(outcome)
  local all = redis.call('HGETALL', KEYS[1])
  table.insert(all, 1, outcome)
  return all
end
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return reply('late') end
local state, user = ARGV[1], ARGV[2]
if tonumber(ARGV[3]) >= tonumber(redis.call('HGET', KEYS[1], 'expires')) and state ~= 'expired' then
  redis.call('HSET', KEYS[1], 'state', 'expired', 'by', '')
  return reply('late')
end
if state ~= 'expired' then
  local requester = cjson.decode(redis.call('HGET', KEYS[1], 'data'))['requester']
  local allowed = user == requester
  for i = 4, #ARGV do
    if ARGV[i] == user then allowed = true end
  end
  if not allowed then return reply('refused') end
end
redis.call('HSET', KEYS[1], 'state', state, 'by', user)
return reply('decided')
"""

CLAIM_RUN = """
if redis.call('HGET', KEYS[1], 'state') ~= 'approved' or redis.call('HGET', KEYS[1], 'ran') ~= '0' then
  return 0
end
redis.call('HSET', KEYS[1], 'ran', '1')
return 1
"""

SET_PROMPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'prompt', ARGV[1]) end
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(approval_id: str, flat: Sequence[Any]) -> ApprovalRecord | None:
    if not flat:
        return None
    fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    return ApprovalRecord.from_parts(
        approval_id, fields["data"], state=fields["state"], decided_by=fields.get("by", ""),
        ran=fields.get("ran") == "1", prompt=fields.get("prompt", ""), expires_ms=int(fields["expires"]),
    )  # fmt: skip


class RedisApprovals:
    def __init__(self, client: RedisClient, *, key_prefix: str = "chat") -> None:
        self._client = client
        self._prefix = key_prefix
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("create", CREATE), ("decide", DECIDE), ("claim", CLAIM_RUN), ("prompt", SET_PROMPT), ("get", _ALL),
            )
        }  # fmt: skip

    async def _run(self, name: str, key: str, args: Sequence[str | int], what: str) -> Any:
        try:
            return await self._scripts[name](keys=[key], args=list(args))
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, what) from exc

    async def create(self, record: ApprovalRecord, keep_seconds: int) -> ApprovalRecord:
        key = approval_key(self._prefix, record.namespace, record.approval_id)
        expires_ms = int(record.expires_at * 1000)
        keep_ms = max(expires_ms - int(time.time() * 1000), 0) + keep_seconds * 1000
        flat = await self._run("create", key, [record.data_json(), expires_ms, keep_ms], f"creating {key}")
        stored = _record(record.approval_id, flat)
        assert stored is not None
        return stored

    async def get(self, namespace: str | None, approval_id: str) -> ApprovalRecord | None:
        key = approval_key(self._prefix, namespace, approval_id)
        return _record(approval_id, await self._run("get", key, [], f"reading {key}"))

    async def decide(
        self, namespace: str | None, approval_id: str, state: ApprovalState, user_id: str, approvers: Collection[str]
    ) -> Decided:
        key = approval_key(self._prefix, namespace, approval_id)
        args: list[str | int] = [state, user_id, int(time.time() * 1000), *approvers]
        reply = await self._run("decide", key, args, f"deciding {key}")
        return Decided(_text(reply[0]), _record(approval_id, reply[1:]))  # type: ignore[arg-type]

    async def claim_run(self, namespace: str | None, approval_id: str) -> bool:
        key = approval_key(self._prefix, namespace, approval_id)
        return bool(await self._run("claim", key, [], f"claiming the run of {key}"))

    async def set_prompt(self, namespace: str | None, approval_id: str, prompt: str) -> None:
        key = approval_key(self._prefix, namespace, approval_id)
        await self._run("prompt", key, [prompt], f"noting the prompt of {key}")
