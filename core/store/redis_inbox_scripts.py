"""The inbox's Lua scripts: each step of a turn is one of them, atomic, over one conversation's keys.

KEYS are always `ConversationKeys.all()`: 1 messages, 2 writes, 3 inbox, 4 turns, 5 seen, 6 rate (COMMIT
also takes 7, the reset watermark).
The lease is the inbox stream's consumer group `turns`: its pending entry (XREADGROUP, XCLAIM) names
the owner, its idle time is the lease's age, its delivery count fences a stale owner out.
"""

from __future__ import annotations

from core.store.inbox import RESET_WATERMARK_SECONDS

__all__ = ["COMMIT", "FINISH", "NOTE", "RECEIVE", "RELEASE", "RENEW", "RESUME", "UNSCHEDULE"]

# Shared by the scripts that hand a message out. A live lease of another owner: {'busy', ms left}.
_TAKE = """
local function history(max)
  if max > 0 then return redis.call('LRANGE', KEYS[1], -max, -1) end
  return redis.call('LRANGE', KEYS[1], 0, -1)
end
local function handed(id, fields, deliveries, max)
  local key, payload = fields[2], fields[4]
  return {'taken', id, key, payload, deliveries, redis.call('HGET', KEYS[4], key) or '', history(max)}
end
local function take_head(owner, max, lease_ms, own_is_busy)
  if redis.call('EXISTS', KEYS[3]) == 0 then return {'idle'} end
  local pending = redis.call('XPENDING', KEYS[3], 'turns', '-', '+', 1)
  if #pending > 0 then
    local id, holder, idle, deliveries = pending[1][1], pending[1][2], pending[1][3], pending[1][4]
    if idle < lease_ms then
      if holder ~= owner or own_is_busy then return {'busy', lease_ms - idle} end
      local entry = redis.call('XRANGE', KEYS[3], id, id)
      return handed(id, entry[1][2], deliveries, max)
    end
    local claimed = redis.call('XCLAIM', KEYS[3], 'turns', owner, lease_ms, id)
    if #claimed > 0 and claimed[1] then return handed(id, claimed[1][2], deliveries + 1, max) end
    redis.call('XACK', KEYS[3], 'turns', id)  -- the entry itself is gone: nothing to answer
  end
  local got = redis.call('XREADGROUP', 'GROUP', 'turns', owner, 'COUNT', 1, 'STREAMS', KEYS[3], '>')
  if not got then return {'idle'} end
  local entry = got[1][2][1]
  return handed(entry[1], entry[2], 1, max)
end
local function holds(id, owner, deliveries)
  local p = redis.call('XPENDING', KEYS[3], 'turns', id, id, 1)
  return #p > 0 and p[1][2] == owner and p[1][4] == tonumber(deliveries)
end
"""

# ARGV: key, payload, token, owner, now_ms, take, max, keep_seconds, user, window, rate_limit, lease_ms
RECEIVE = (
    _TAKE
    + """
local key, token, owner = ARGV[1], ARGV[3], ARGV[4]
local now, max, keep, lease_ms = tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[12])
local raw = redis.call('HGET', KEYS[4], key)
local hits = 0
if raw then
  local record = cjson.decode(raw)
  if record.token ~= token then return {'duplicate', record.state} end
  hits = tonumber(record.hits or 0)  -- our own call again (its reply was lost): answer as it did
else
  if tonumber(ARGV[11]) > 0 then
    local window, counted = ARGV[10], redis.call('HGET', KEYS[6], ARGV[9])
    local seen_window, n = nil, 0
    if counted then seen_window, n = string.match(counted, '^(%d+)|(%d+)$') end
    if seen_window == window then hits = tonumber(n) + 1 else hits = 1 end
    redis.call('HSET', KEYS[6], ARGV[9], window .. '|' .. hits)
    redis.call('EXPIRE', KEYS[6], 120)
  end
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('XGROUP', 'CREATE', KEYS[3], 'turns', '0', 'MKSTREAM') end
  local id = redis.call('XADD', KEYS[3], '*', 'key', key, 'msg', ARGV[2])
  redis.call('HSET', KEYS[4], key, cjson.encode({state = 'received', id = id, token = token, hits = hits}))
  redis.call('ZADD', KEYS[5], now, key)
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - keep * 1000, 'LIMIT', 0, 32)
  if #old > 0 then
    redis.call('HDEL', KEYS[4], unpack(old))
    redis.call('ZREM', KEYS[5], unpack(old))
  end
  for i = 3, 5 do redis.call('EXPIRE', KEYS[i], keep) end
end
if ARGV[6] ~= '1' then return {'queued', hits} end
-- A new message while this process answers the conversation: it is queued behind that turn.
local taken = take_head(owner, max, lease_ms, not raw)
if taken[1] ~= 'taken' then return {'queued', hits} end
taken[8] = hits
return taken
"""
)

# ARGV: owner, max, lease_ms
RESUME = _TAKE + "return take_head(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), false)"

# ARGV: id, owner, deliveries
RENEW = (
    _TAKE
    + """
if not holds(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('XCLAIM', KEYS[3], 'turns', ARGV[2], 0, ARGV[1], 'JUSTID')
return 1
"""
)

# ARGV: id, owner, deliveries, lease_ms. The entry's idle time jumps past the lease: anyone may take it now.
RELEASE = (
    _TAKE
    + """
if not holds(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('XCLAIM', KEYS[3], 'turns', ARGV[2], 0, ARGV[1], 'IDLE', tonumber(ARGV[4]) * 100 + 1, 'JUSTID')
return 1
"""
)

# ARGV: id, owner, deliveries, key, record, max, ttl, batch, clear, messages...; KEYS[7]: the reset watermark.
# clear: 0, 1 (empty the history first), or a reset's watermark (epoch seconds): empty it and keep the mark.
# redis-py retries a call whose reply was lost: the batch ID in `writes` keeps a retry from storing twice.
COMMIT = (
    _TAKE
    + """
if not holds(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
local max, ttl, batch = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
if ARGV[9] ~= '0' then redis.call('DEL', KEYS[1], KEYS[2]) end
if ARGV[9] ~= '0' and ARGV[9] ~= '1' then
  local mark = ARGV[9]
  if ttl > 0 then redis.call('SET', KEYS[7], mark, 'EX', math.max(ttl, """
    + str(RESET_WATERMARK_SECONDS)
    + """)) else redis.call('SET', KEYS[7], mark) end
end
if #ARGV > 9 and not redis.call('LPOS', KEYS[2], batch) then
  for first = 10, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
  end
  if max > 0 then redis.call('LTRIM', KEYS[1], -max, -1) end
  redis.call('LPUSH', KEYS[2], batch)
  redis.call('LTRIM', KEYS[2], 0, 31)
end
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('XCLAIM', KEYS[3], 'turns', ARGV[2], 0, ARGV[1], 'JUSTID')
return 1
"""
)

# ARGV: id, owner, deliveries, key, record
NOTE = (
    _TAKE
    + """
if not holds(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
return 1
"""
)

# ARGV: id, key, record, take_next, owner, max, lease_ms, keep_seconds. Delivered is delivered, whoever
# holds the lease now: acknowledging it also fences out a process that took the message over meanwhile.
FINISH = (
    _TAKE
    + """
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[5], 'NX', redis.call('TIME')[1] * 1000, ARGV[2])  -- a late finish is pruned too
redis.call('EXPIRE', KEYS[4], ARGV[8])
redis.call('EXPIRE', KEYS[5], ARGV[8])
redis.call('XACK', KEYS[3], 'turns', ARGV[1])
redis.call('XDEL', KEYS[3], ARGV[1])
if ARGV[4] ~= '1' then return {'idle'} end
return take_head(ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), false)
"""
)

# KEYS: the index; ARGV: thread ID, the score read before
UNSCHEDULE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""
