-- These outboxes are published and committed: drop each, unless a newer write (with a
-- newer outbox) came since. A hash with no state document is an erased customer whose
-- erase is now committed: the whole hash goes, and the customer leaves the erasing set.
-- A timer or rules decision kept its customer due at once while its outbox waited: the
-- customer gets its real next check now.
-- KEYS[1]: the erasing set; KEYS[2..]: customer hashes "seg:{<id>}:state".
-- ARGV, per customer in KEYS order: the version that wrote the hash (0: a hash already
-- gone), the timer sorted set or "", the real next check (ms), "none" (no next check) or
-- "" (the written one stands).
local dropped = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local a = 3 * (i - 2) + 1
  if (redis.call('HGET', key, 'v') or '0') == ARGV[a] then
    local id = string.sub(key, 6, #key - 7)
    if redis.call('HEXISTS', key, 's') == 0 then
      redis.call('DEL', key)
      redis.call('SREM', KEYS[1], id)
    else
      redis.call('HDEL', key, 'p')
      if ARGV[a + 1] ~= '' and ARGV[a + 2] ~= '' then
        if ARGV[a + 2] == 'none' then
          redis.call('ZREM', ARGV[a + 1], id)
        else
          redis.call('ZADD', ARGV[a + 1], ARGV[a + 2], id)
        end
      end
    end
    dropped = dropped + 1
  end
end
return dropped
