-- Write many customers' state and outbox, each only if nobody else wrote it since we
-- read it (compare-and-set), and with the same decision move the segment population
-- counters, the customer's timer (its next check time) and its recent changes. Redis
-- runs a script atomically: no reader sees a half-written customer.
-- KEYS[1] population hash {"dimension<US>segment" = count}; KEYS[2] the erasing set;
-- then per customer its hash {v = version, s = state document, p = outbox (absent when
-- empty), o = applied offsets (only when erased)} and its recent-changes list.
-- ARGV[1]: how many recent changes to keep. Then per customer, in KEYS order: expected
-- version, state ("" = erased), outbox or "", timer sorted set, next check (ms) or "",
-- customer id, n, m, forget ("1" after an erase), offsets (when erased) or "",
-- then n (field, delta) pairs, then m change records (oldest first).
-- Returns one 1 (written) or 0 (lost the race) per customer.
local keep = tonumber(ARGV[1])
local result = {}
local a = 2
for i = 3, #KEYS, 2 do
  local key, recent = KEYS[i], KEYS[i + 1]
  local expected = tonumber(ARGV[a])
  local id = ARGV[a + 5]
  local n = tonumber(ARGV[a + 6])
  local m = tonumber(ARGV[a + 7])
  local v = tonumber(redis.call('HGET', key, 'v') or '0')
  if v == expected then
    redis.call('HDEL', key, 'q')  -- quarantined (quarantine.lua) until a write succeeds
    if ARGV[a + 1] == '' then
      -- erased: no state document until the erase is committed (then outbox_done.lua deletes the hash)
      redis.call('HDEL', key, 's')
      redis.call('HSET', key, 'v', v + 1, 'o', ARGV[a + 9])
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
    if ARGV[a + 4] == '' then
      redis.call('ZREM', ARGV[a + 3], id)
    else
      redis.call('ZADD', ARGV[a + 3], ARGV[a + 4], id)
    end
    for j = 1, n do
      redis.call('HINCRBY', KEYS[1], ARGV[a + 8 + 2 * j], ARGV[a + 9 + 2 * j])
    end
    if ARGV[a + 8] == '1' then
      redis.call('DEL', recent)
    end
    if m > 0 then
      for j = 1, m do
        redis.call('LPUSH', recent, ARGV[a + 9 + 2 * n + j])
      end
      redis.call('LTRIM', recent, 0, keep - 1)
    end
    result[#result + 1] = 1
  else
    result[#result + 1] = 0
  end
  a = a + 10 + 2 * n + m
end
return result
