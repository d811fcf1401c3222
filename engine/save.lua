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
-- ARGV[1]: how many recent changes to keep. ARGV[2]: the customers' writes, in KEYS order, as
-- one MessagePack array (one argument, not a dozen per customer: packing and reading thousands
-- of arguments cost more than the writes), each an array: expected version, state ("" =
-- erased), outbox or "", next check (ms, as text) or "", customer id, forget ("1" after an
-- erase) or "", offsets (when erased) or "", population moves {field, delta, ...}, change
-- records (oldest first), and the state document the write's fold started from where the writer
-- took it from its cache without a load, else "": then the stored document must be those very
-- bytes too (another writer may have left the same version: segengine.statecache).
-- Returns one 1 (written) or 0 (lost the race) per customer.
local keep = tonumber(ARGV[1])
local writes = cmsgpack.unpack(ARGV[2])
local result = {}
for w = 1, #writes do
  local i = 3 * w
  local key, recent, timers = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local expected, state, outbox, check, id, forget, offsets, moves, entries, held = unpack(writes[w])
  local v = tonumber(redis.call('HGET', key, 'v') or '0')
  if v == expected and (held == '' or redis.call('HGET', key, 's') == held) then
    redis.call('HDEL', key, 'q')  -- quarantined (quarantine.lua) until a write succeeds
    if state == '' then
      -- erased: no state document until the erase is committed (then outbox_done.lua deletes the hash)
      redis.call('HDEL', key, 's')
      redis.call('HSET', key, 'v', v + 1, 'o', offsets)
      redis.call('SADD', KEYS[2], id)
    else
      redis.call('HSET', key, 'v', v + 1, 's', state)
      if redis.call('HDEL', key, 'o') == 1 then
        redis.call('SREM', KEYS[2], id)  -- erased, and back as a new customer
      end
    end
    if outbox == '' then
      redis.call('HDEL', key, 'p')
    else
      redis.call('HSET', key, 'p', outbox)
    end
    if check == '' then
      redis.call('ZREM', timers, id)
    else
      redis.call('ZADD', timers, check, id)
    end
    for j = 1, #moves, 2 do
      redis.call('HINCRBY', KEYS[1], moves[j], moves[j + 1])
    end
    if forget == '1' then
      redis.call('DEL', recent)
      redis.call('HDEL', key, 'h')
    end
    if #entries > 0 then
      -- the recent changes: field h of the hash, newest first, each entry after its length
      -- (2 bytes, big-endian); the list ``recent`` of versions before is moved into it
      local parts = {}
      for j = #entries, 1, -1 do
        local entry = entries[j]
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
end
return result
