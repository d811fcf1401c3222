-- These outboxes are published and committed: drop each, unless a newer write (with a
-- newer outbox) came since. A hash with no state document is an erased customer whose
-- erase is now committed: the whole hash goes, and the customer leaves the erasing set.
-- A timer or rules decision kept its customer due at once while its outbox waited: the
-- customer gets its real next check now. Every key is one bucket's (segengine.layout).
-- KEYS[1]: the bucket's erasing set; then per customer its hash and the timer sorted set
-- of its home partition.
-- ARGV, per customer in KEYS order: the version that wrote the hash (0: a hash already
-- gone), the real next check (ms), "none" (no next check) or "" (the written one stands),
-- the customer id.
local dropped = 0
for i = 2, #KEYS, 2 do
  local key, timers = KEYS[i], KEYS[i + 1]
  local a = 3 * (i - 2) / 2 + 1
  if (redis.call('HGET', key, 'v') or '0') == ARGV[a] then
    local id = ARGV[a + 2]
    if redis.call('HEXISTS', key, 's') == 0 then
      redis.call('DEL', key)
      redis.call('SREM', KEYS[1], id)
    else
      redis.call('HDEL', key, 'p')
      if ARGV[a + 1] == 'none' then
        redis.call('ZREM', timers, id)
      elseif ARGV[a + 1] ~= '' then
        redis.call('ZADD', timers, ARGV[a + 1], id)
      end
    end
    dropped = dropped + 1
  end
end
return dropped
