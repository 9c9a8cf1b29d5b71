-- Argo CD health of a kube-dss.dev/v1alpha1 DSSConnection:
--   Healthy      Ready=True: an authenticated call to DSS succeeded.
--   Degraded     Ready=False for a reason that needs a person to act (bad or missing credentials, bad
--                CA, invalid spec, a connection the operator's policy refuses), or Stalled=True.
--   Progressing  anything else: no status yet, a stale status, or DSS unreachable for now (transient:
--                the operator retries with backoff, so the connection is not marked Degraded for it).
--
-- Argo CD runs this WITHOUT the Lua standard libraries: no string.* or math.* calls.

-- Ready=False reasons that do not resolve by waiting.
local permanent = {
  InvalidSpec = true,
  InvalidURL = true,
  SecretNotFound = true,
  SecretKeyNotFound = true,
  Unauthorized = true,
  Forbidden = true,
  AuthenticationFailed = true,
  InvalidCA = true,
  TLSError = true,
  HttpsRequired = true,
  InsecureConnectionRefused = true,
}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function explain(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local hs = { status = "Progressing", message = "Waiting for the kube-dss operator to check the connection" }
local status = obj.status
if status == nil then
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil then
  if status.observedGeneration == nil or status.observedGeneration < generation then
    hs.message = "Waiting for the kube-dss operator to observe generation " .. generation
    return hs
  end
end

local ready = condition(status.conditions, "Ready")
local stalled = condition(status.conditions, "Stalled")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = explain(ready, "Connected to DSS")
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = explain(stalled, "The connection is stalled")
elseif ready ~= nil and ready.status == "False" then
  if ready.reason ~= nil and permanent[ready.reason] then
    hs.status = "Degraded"
  end
  hs.message = explain(ready, "Not connected to DSS")
end
return hs
