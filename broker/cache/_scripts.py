"""The referral cache's Redis scripts, one atomic step each (see :mod:`broker.cache.cache`).

Keys of one customer share a hash tag, so every script touches one cluster slot. Every reply
is named (``name, value, name, value...``): :class:`broker.cache._backends.RedisEntries` reads
it into a dataclass with :func:`broker.store.scripts.decode`, never by position, and
:class:`broker.cache._backends.MemoryEntries` is the same steps on process memory.
A bad generation key (another type, anything but a canonical integer) is replaced by one above
any value it can have held, the time in ms, never reset: a reset would let a read that began
before a send match it again and store the older list.
"""

from __future__ import annotations

from broker.store.limits import COUNT_LUA

# KEYS: rate, entry, generation, back-off, lease.
# ARGV: limit (0: not counted), window ms, lease token, lease ms, caching (1/0), generation ttl.
# Replies (a Lookup): allowed, count, reset_ms, and when caching gen, verdict (hit, backoff,
# lead, wait), body, left_ms (freshness left), holder, repaired.
READ_LUA = (
    """
local rate_key, limit, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local count, reset = 0, 0
local out = {}
local function field(name, value)
  if value then out[#out + 1] = name; out[#out + 1] = value end
end
if limit > 0 then
"""
    + COUNT_LUA
    + """
end
field('count', count)
field('reset_ms', reset)
if limit > 0 and count > limit then field('allowed', 0) return out end
field('allowed', 1)
if ARGV[5] == '0' then return out end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gen = redis.pcall('GET', KEYS[3])
-- Only a canonical integer is a generation ('007', ' 12', '5.5' or '1e300' would never match
-- the entry's 'g' again, or not decode): anything else is repaired.
local canonical = type(gen) == 'string'
  and (gen == '0' or (#gen <= 18 and gen:match('^[1-9]%d*$') ~= nil))
if type(gen) == 'table' or (gen and not canonical) then
  -- A bad generation is replaced by one above any it can have held (the time in ms), never
  -- reset: a reset would let a read from before a send match it again.
  gen = string.format('%d', now)
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[3], gen, 'PX', ARGV[6])
  field('repaired', 'generation')
end
gen = gen or '0'
field('gen', gen)
local e = redis.call('HMGET', KEYS[2], 'b', 'f', 'g')
if e[1] and e[3] == gen then
  local left = tonumber(e[2]) - now
  field('body', e[1])
  field('left_ms', left)
  if left > 0 then field('verdict', 'hit') return out end
  if redis.call('PTTL', KEYS[4]) > 0 then field('verdict', 'backoff') return out end
end
-- Taken, or already ours (a retried call after a lost reply): lead.
local holder = redis.call('GET', KEYS[5])
if not holder or holder == ARGV[3] then
  redis.call('SET', KEYS[5], ARGV[3], 'PX', ARGV[4])
  field('verdict', 'lead')
  return out
end
field('verdict', 'wait')
field('holder', holder)
return out
"""
)

# KEYS: entry, generation, lease, back-off. ARGV: body, generation seen, fresh ms, keep ms, token.
# Replies: stored (1 when the generation was still the one seen).
PUT_LUA = """
local stored = 0
if (redis.pcall('GET', KEYS[2]) or '0') == ARGV[2] then
  local t = redis.call('TIME')
  local fresh = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'b', ARGV[1], 'f', string.format('%d', fresh), 'g', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('DEL', KEYS[4])
  stored = 1
end
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
return {'stored', stored}
"""

# KEYS: lease, back-off. ARGV: token, back-off ms (0: none). Replies: released (the lease was ours).
RELEASE_LUA = """
local released = 0
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return {'released', released}
"""

# KEYS: generation, then every entry and lease of the customer.
# ARGV: generation ttl ms, pub/sub channel, customer key prefix. Replies: gen (the new one),
# repaired.
INVALIDATE_LUA = """
local gen = redis.pcall('INCR', KEYS[1])
local repaired = false
if type(gen) == 'table' then
  -- Not a number: start above any generation it can have held (the time in ms), never at 1.
  local t = redis.call('TIME')
  gen = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], string.format('%d', gen))
  repaired = true
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('PUBLISH', ARGV[2], ARGV[3] .. '|' .. string.format('%d', gen))
if repaired then return {'gen', gen, 'repaired', 'generation'} end
return {'gen', gen}
"""
