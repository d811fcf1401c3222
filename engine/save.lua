-- Write many customers' state and outbox, each only if nobody else wrote it since we
-- read it (compare-and-set), and move the segment population counters by the same
-- decisions. Redis runs a script atomically: no reader sees a half-written customer.
-- KEYS[1] population hash {"dimension<US>segment" = count}; KEYS[2..] customer hashes
-- {v = version, s = state document, p = outbox (absent when empty)}
-- ARGV, per customer in KEYS order: expected version, state, outbox or "", n, then n
-- (field, delta) pairs. Returns one 1 (written) or 0 (lost the race) per customer.
local result = {}
local a = 1
for i = 2, #KEYS do
  local key = KEYS[i]
  local expected = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 3])
  local v = tonumber(redis.call('HGET', key, 'v') or '0')
  if v == expected then
    redis.call('HSET', key, 'v', v + 1, 's', ARGV[a + 1])
    if ARGV[a + 2] == '' then
      redis.call('HDEL', key, 'p')
    else
      redis.call('HSET', key, 'p', ARGV[a + 2])
    end
    for j = 1, n do
      redis.call('HINCRBY', KEYS[1], ARGV[a + 2 + 2 * j], ARGV[a + 3 + 2 * j])
    end
    result[#result + 1] = 1
  else
    result[#result + 1] = 0
  end
  a = a + 4 + 2 * n
end
return result
