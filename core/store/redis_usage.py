"""The usage ledger on Redis: one hash per subject and UTC day, one index (ZSET) per scope and day.

Every key of a day shares that day's hash tag (core.store.keys), so a reservation and a settlement are
each one script, on a single server and on a Cluster alike. Reads are pipelined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from core.store.keys import usage_index_key, usage_key, usage_member
from core.store.redis import translate_redis_error
from core.store.topology import RedisClient
from core.store.usage import USAGE_KEEP_SECONDS, Charge, Scope, Subject, SubjectUsage, summed_usage, top_subjects
from core.usage.meter import TokenCount

__all__ = ["RedisUsageLedger"]

# KEYS: the subjects' hashes. ARGV: ttl, then per key its charge and its limit (0: none).
_RESERVE = """
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i + 1])
  if limit > 0 and tonumber(redis.call('HGET', KEYS[i], 'charged') or '0') >= limit then return i end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'charged', ARGV[2 * i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 0
"""

# KEYS: n subject hashes, then their n indexes. ARGV: ttl, model, prompt, completion, estimated, then per
# subject its index member and its charge change ('-': none, the scope has no budget).
_SETTLE = """
local ttl, model = ARGV[1], ARGV[2]
local p, c, e = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = #KEYS / 2
for i = 1, n do
  local key, index, member, delta = KEYS[i], KEYS[n + i], ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  if p + c > 0 then
    redis.call('HINCRBY', key, model .. '|prompt', p)
    redis.call('HINCRBY', key, model .. '|completion', c)
    if e > 0 then redis.call('HINCRBY', key, model .. '|estimated', e) end
    redis.call('HINCRBY', key, 'turns', 1)
    redis.call('ZINCRBY', index, p + c, member)
    redis.call('EXPIRE', index, ttl)
  end
  if delta ~= '-' and tonumber(delta) ~= 0 then
    if redis.call('HINCRBY', key, 'charged', delta) < 0 then redis.call('HSET', key, 'charged', 0) end
  end
  if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ttl) end
end
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisUsageLedger:
    def __init__(self, client: RedisClient, *, key_prefix: str = "chat") -> None:
        self._client = client
        self._prefix = key_prefix
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def _key(self, day: str, subject: Subject) -> str:
        return usage_key(self._prefix, day, subject.scope, subject.platform, subject.id)

    async def reserve(self, day: str, charges: Sequence[Charge]) -> Subject | None:
        if not charges:
            return None
        keys = [self._key(day, charge.subject) for charge in charges]
        args: list[int] = [USAGE_KEEP_SECONDS]
        for charge in charges:
            args += [charge.tokens, charge.limit]
        try:
            refused = int(await self._reserve(keys=keys, args=args))
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"reserving tokens on {keys[0]}") from exc
        return charges[refused - 1].subject if refused else None

    async def settle(
        self, day: str, subjects: Sequence[Subject], model: str, tokens: TokenCount, charges: Sequence[Charge]
    ) -> None:
        if not subjects:
            return
        deltas = {charge.subject: charge.tokens for charge in charges}
        keys = [self._key(day, s) for s in subjects] + [usage_index_key(self._prefix, day, s.scope) for s in subjects]
        args: list[str | int] = [USAGE_KEEP_SECONDS, model, tokens.prompt, tokens.completion, tokens.estimated]
        for subject in subjects:
            delta = deltas.get(subject)
            args += [usage_member(subject.platform, subject.id), "-" if delta is None else delta]
        try:
            await self._settle(keys=keys, args=args)
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"counting tokens on {keys[0]}") from exc

    async def usage(self, days: Sequence[str], subjects: Sequence[Subject]) -> list[SubjectUsage]:
        if not days or not subjects:
            return [SubjectUsage(s) for s in subjects]
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for subject in subjects:
                    for day in days:
                        pipe.hgetall(self._key(day, subject))
                replies = await pipe.execute()
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, "reading token usage") from exc
        out = []
        for index, subject in enumerate(subjects):
            hashes = replies[index * len(days) : (index + 1) * len(days)]
            out.append(summed_usage(subject, [{_text(k): int(v) for k, v in h.items()} for h in hashes]))
        return out

    async def top(
        self, days: Sequence[str], scope: Scope, limit: int, platform: str | None = None
    ) -> list[SubjectUsage]:
        totals: dict[str, float] = {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.zrange(usage_index_key(self._prefix, day, scope), 0, -1, withscores=True)
                replies = await pipe.execute()
        except RedisError as exc:
            raise translate_redis_error(exc, self._client, f"reading the {scope} usage index") from exc
        for rows in replies:
            for member, score in rows:
                totals[_text(member)] = totals.get(_text(member), 0.0) + float(score)
        return await self.usage(days, top_subjects(totals, scope, limit, platform))
