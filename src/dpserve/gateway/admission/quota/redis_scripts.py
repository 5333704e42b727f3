"""Lua scripts for the Redis quota store: each runs atomically on the server, on the server's clock.

Per tenant: `rpm` and `tpm` are hashes {level, ts} holding a token bucket (same rules as
bucket.TokenBucket: capacity = limit, refill limit/60 per second); `conc` is a sorted set of
lease ids scored by expiry time, so slots of a crashed gateway free themselves.
Numbers come back as strings because Redis truncates Lua floats to integers.
"""

from __future__ import annotations

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function level(key, limit)
  local v = redis.call('HMGET', key, 'level', 'ts')
  local lvl, ts = tonumber(v[1]), tonumber(v[2])
  if lvl == nil or ts == nil then return limit end
  return math.min(limit, lvl + math.max(0, now - ts) * limit / 60)
end
local function store(key, limit, lvl)
  lvl = math.min(limit, lvl)  -- a refund never overfills
  redis.call('HSET', key, 'level', tostring(lvl), 'ts', tostring(now))
  -- keep the key until it has refilled (debt included), then let it vanish
  redis.call('EXPIRE', key, math.ceil((limit - lvl) * 60 / limit) + 60)
end
"""

# KEYS: rpm, tpm, conc.  ARGV: rpm limit, tpm limit, concurrency limit (0 = none), lease id, lease ttl s,
# tokens to reserve. Returns {allowed (1/0), limit name, retry-after seconds}.
ACQUIRE = _PRELUDE + """
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl, reserve = tonumber(ARGV[5]), tonumber(ARGV[6])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then return {0, 'max_concurrency', '1'} end
end
local rl = 0
if rpm > 0 then
  rl = level(KEYS[1], rpm)
  if rl < 1 then return {0, 'requests_per_minute', tostring((1 - rl) * 60 / rpm)} end
end
local tl = 0
if tpm > 0 then
  tl = level(KEYS[2], tpm)
  local need = math.max(1, math.min(reserve, tpm))  -- as quota.base.reservation_need
  if tl < need then return {0, 'tokens_per_minute', tostring((need - tl) * 60 / tpm)} end
end
if rpm > 0 then store(KEYS[1], rpm, rl - 1) end
if tpm > 0 and reserve > 0 then store(KEYS[2], tpm, tl - reserve) end
if conc > 0 then
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[4])
  redis.call('EXPIRE', KEYS[3], math.ceil(ttl) * 2)
end
return {1, '', '0'}
"""

# KEYS: tpm, conc.  ARGV: tpm limit (0 = none), tokens to settle (real - reserved; may be < 0), lease id.
RELEASE = _PRELUDE + """
local tpm, used = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 and used ~= 0 then store(KEYS[1], tpm, level(KEYS[1], tpm) - used) end
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""

# KEYS: conc.  ARGV: lease ttl s, lease ids...  Pushes live leases' expiry forward.
RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) * 2)
return 1
"""

# KEYS: gateways.  ARGV: ttl s, gateway id.  This gateway is alive for ttl more seconds; returns how
# many gateways are alive (each falls back to 1/that share of every limit while Redis is down).
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) * 2)
return redis.call('ZCARD', KEYS[1])
"""
