-- These outboxes are published and committed: drop each, unless a newer write (with a
-- newer outbox) came since. A hash with no state document is an erased customer whose
-- erase is now committed: the whole hash goes, and the customer leaves the erasing set.
-- KEYS[1]: the erasing set; KEYS[2..]: customer hashes "seg:{<id>}:state".
-- ARGV: the version that wrote each hash, in KEYS order (0: a hash already gone).
local dropped = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  if (redis.call('HGET', key, 'v') or '0') == ARGV[i - 1] then
    if redis.call('HEXISTS', key, 's') == 0 then
      redis.call('DEL', key)
      redis.call('SREM', KEYS[1], string.sub(key, 6, #key - 7))
    else
      redis.call('HDEL', key, 'p')
    end
    dropped = dropped + 1
  end
end
return dropped
