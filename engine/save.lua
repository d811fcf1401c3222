-- Write many customers' state and outbox, each only if nobody else wrote it since we
-- read it (compare-and-set), and with the same decision move the segment population
-- counters, the customer's timer (its next check time) and its recent changes. Redis
-- runs a script atomically: no reader sees a half-written customer. Every key is one
-- bucket's (segengine.layout): on Redis Cluster, one slot.
-- KEYS[1] the bucket's population hash {"dimension<US>segment" = count}; KEYS[2] its
-- erasing set; then per customer its hash {v = version, s = state document, p = outbox
-- (absent when empty), o = applied offsets (only when erased), h = its recent changes}, the
-- recent-changes list of versions before (moved into h when the next change comes) and the
-- timer sorted set of its home partition.
-- ARGV[1]: how many recent changes to keep. Then per customer, in KEYS order: expected
-- version, state ("" = erased), outbox or "", next check (ms) or "", customer id, n, m,
-- forget ("1" after an erase), offsets (when erased) or "", then n (field, delta) pairs,
-- then m change records (oldest first).
-- Returns one 1 (written) or 0 (lost the race) per customer.
local keep = tonumber(ARGV[1])
local result = {}
local a = 2
for i = 3, #KEYS, 3 do
  local key, recent, timers = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local expected = tonumber(ARGV[a])
  local id = ARGV[a + 4]
  local n = tonumber(ARGV[a + 5])
  local m = tonumber(ARGV[a + 6])
  local v = tonumber(redis.call('HGET', key, 'v') or '0')
  if v == expected then
    redis.call('HDEL', key, 'q')  -- quarantined (quarantine.lua) until a write succeeds
    if ARGV[a + 1] == '' then
      -- erased: no state document until the erase is committed (then outbox_done.lua deletes the hash)
      redis.call('HDEL', key, 's')
      redis.call('HSET', key, 'v', v + 1, 'o', ARGV[a + 8])
      redis.call('SADD', KEYS[2], id)
    else
      redis.call('HSET', key, 'v', v + 1, 's', ARGV[a + 1])
      if redis.call('HDEL', key, 'o') == 1 then
        redis.call('SREM', KEYS[2], id)  -- erased, and back as a new customer
      end
    end
    if ARGV[a + 2] == '' then
      redis.call('HDEL', key, 'p')
    else
      redis.call('HSET', key, 'p', ARGV[a + 2])
    end
    if ARGV[a + 3] == '' then
      redis.call('ZREM', timers, id)
    else
      redis.call('ZADD', timers, ARGV[a + 3], id)
    end
    for j = 1, n do
      redis.call('HINCRBY', KEYS[1], ARGV[a + 7 + 2 * j], ARGV[a + 8 + 2 * j])
    end
    if ARGV[a + 7] == '1' then
      redis.call('DEL', recent)
      redis.call('HDEL', key, 'h')
    end
    if m > 0 then
      -- the recent changes: field h of the hash, newest first, each entry after its length
      -- (2 bytes, big-endian); the list ``recent`` of versions before is moved into it
      local parts = {}
      for j = m, 1, -1 do
        local entry = ARGV[a + 8 + 2 * n + j]
        parts[#parts + 1] = struct.pack('>H', #entry) .. entry
      end
      parts[#parts + 1] = redis.call('HGET', key, 'h') or ''
      if redis.call('EXISTS', recent) == 1 then
        for _, entry in ipairs(redis.call('LRANGE', recent, 0, keep - 1)) do
          parts[#parts + 1] = struct.pack('>H', #entry) .. entry
        end
        redis.call('DEL', recent)
      end
      local blob = table.concat(parts)
      local pos, count = 1, 0
      while pos <= #blob and count < keep do
        pos = pos + 2 + struct.unpack('>H', blob, pos)
        count = count + 1
      end
      redis.call('HSET', key, 'h', string.sub(blob, 1, pos - 1))
    end
    result[#result + 1] = 1
  else
    result[#result + 1] = 0
  end
  a = a + 9 + 2 * n + m
end
return result
