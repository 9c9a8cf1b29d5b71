-- Argo CD health of a kube-dss.dev/v1alpha1 ScenarioRun, read from the status contract (the same
-- contract as a DatasetBuild's; docs/operations.md, "GitOps health"):
--   Healthy      Succeeded=True: the run of this request (and rerunToken) finished well.
--   Degraded     Stalled=True or Succeeded=False: failed, aborted, deadline exceeded, invalid spec, ...;
--                the message is the condition's message.
--   Suspended    status.phase == "Suspended" (spec.suspend: no new run is fired).
--   Progressing  anything else: no status yet, the operator has not observed the latest spec
--                (observedGeneration < metadata.generation), or a run is pending, fired or running.
--
-- Argo CD runs a resource_customizations script WITHOUT the Lua standard libraries (useOpenLibs is
-- false): only base and table functions exist, so this script uses no string.* or math.* calls.

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

-- The text shown for a condition: its message, else its reason.
local function explain(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local hs = { status = "Progressing", message = "Waiting for the kube-dss operator to report a status" }
local status = obj.status
if status == nil then
  return hs
end

-- A status written for an older spec says nothing about the current one: the spec change is a new run
-- request (or a change of deadlines, suspend, ...) the operator has not handled yet.
local generation = obj.metadata.generation
if generation ~= nil then
  if status.observedGeneration == nil or status.observedGeneration < generation then
    hs.message = "Waiting for the kube-dss operator to observe generation " .. generation
    return hs
  end
end

local conditions = status.conditions
local succeeded = condition(conditions, "Succeeded")
local stalled = condition(conditions, "Stalled")

-- A condition set for an older generation is stale, like a stale status.
local function current(c)
  return c ~= nil and (generation == nil or c.observedGeneration == nil or c.observedGeneration >= generation)
end

if current(succeeded) and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = explain(succeeded, "The scenario run succeeded")
  return hs
end

if current(stalled) and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = explain(stalled, "The scenario run is stalled")
  return hs
end

if current(succeeded) and succeeded.status == "False" then
  hs.status = "Degraded"
  hs.message = explain(succeeded, "The scenario run did not succeed")
  return hs
end

if status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = explain(condition(conditions, "Ready"), "spec.suspend is true: no new scenario run is fired")
  return hs
end

local reconciling = condition(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = explain(reconciling, "The scenario run is in progress")
elseif status.phase ~= nil then
  hs.message = "Phase " .. status.phase
end
return hs
