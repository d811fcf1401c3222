-- Read many customers' {version, state, outbox, erased offsets} in one round trip.
-- KEYS: customer hashes. ARGV (may be empty): per key, the state document the caller holds of
-- it, or "": where the stored document is those very bytes, 1 is returned in its place instead
-- of the document (segengine.statecache). The bytes, not a digest of them: comparing is cheaper
-- than hashing, on either side.
-- Returns a flat array: v1, s1, p1, o1, v2, s2, p2, o2, ...
local out = {}
for i = 1, #KEYS do
  local row = redis.call('HMGET', KEYS[i], 'v', 's', 'p', 'o')
  local held = ARGV[i]
  out[#out + 1] = row[1]
  if held and held ~= '' and row[2] == held then
    out[#out + 1] = 1
  else
    out[#out + 1] = row[2]
  end
  out[#out + 1] = row[3]
  out[#out + 1] = row[4]
end
return out
