-- Argo CD health of a kube-dss.dev/v1alpha1 DatasetBuildSchedule, read from its status
-- (docs/operations.md, "GitOps health"):
--   Progressing  no status yet, the operator has not observed the latest spec, Ready is not True, or
--                the schedule is being deleted
--   Degraded     Stalled=True (invalid schedule, time zone or build template: the message says what),
--                or the build of the last slot did not succeed (no build active, and no success
--                since the last slot), as Argo CD reads a CronJob whose last Job failed
--   Suspended    spec.suspend is true: no build is created
--   Healthy      the schedule is valid and creating builds (one may be running)
--
-- Argo CD runs a resource_customizations script WITHOUT the Lua standard libraries (useOpenLibs is
-- false): only base and table functions exist, so this script uses no string.* or math.* calls.
-- RFC 3339 times written by the apiserver (UTC, whole seconds) compare as strings.

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

local hs = { status = "Progressing", message = "Waiting for the kube-dss operator to report a status" }
local status = obj.status
if status == nil then
  return hs
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted: its builds are deleted, each per its deletionPolicy"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the kube-dss operator to observe generation " .. generation
  return hs
end

local stalled = condition(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "The schedule is stalled"
  return hs
end

if obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: no build is created"
  return hs
end

local ready = condition(status.conditions, "Ready")
if ready == nil or ready.status ~= "True" then
  if ready ~= nil and ready.message ~= nil then
    hs.message = ready.message
  end
  return hs
end

local upcoming = ""
if status.nextScheduleTime ~= nil then
  upcoming = "; next slot at " .. status.nextScheduleTime
end
local last = status.lastScheduleTime
if last == nil then
  hs.status = "Healthy"
  hs.message = "No slot has come yet" .. upcoming
  return hs
end
if status.activeCount ~= nil and status.activeCount > 0 then
  hs.status = "Healthy"
  hs.message = "The build of the slot " .. last .. " is running" .. upcoming
  return hs
end
if status.lastSuccessfulTime == nil or status.lastSuccessfulTime < last then
  hs.status = "Degraded"
  hs.message = "The build of the last slot (" .. last .. ") did not succeed" .. upcoming
  return hs
end
hs.status = "Healthy"
hs.message = "The build of the last slot (" .. last .. ") succeeded" .. upcoming
return hs
