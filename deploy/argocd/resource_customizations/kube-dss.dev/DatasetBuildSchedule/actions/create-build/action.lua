-- Asks for the build of the current slot now: stamps kube-dss.dev/create-build with the time (UTC).
-- The operator creates the build the schedule would create for the slot of that minute (that second
-- for a 6-field schedule), with its partition and rerunToken placeholders, once per value, and records
-- the value in status.lastHandledCreateBuildAnnotation. The build is named like the slot's, so a slot
-- that has its build already gets no second one (event BuildExists).
--
-- Argo CD's own CronJob action (create-job) builds the Job in Lua; a DatasetBuild cannot be built
-- there: its placeholders need strftime in the schedule's time zone, and the script has no string
-- library. Refused when discovery.lua disables it (Argo CD runs a disabled action when asked through
-- its API or CLI).
local os = require("os")

local status = obj.status or {}
local annotations = obj.metadata.annotations or {}
local generation = obj.metadata.generation
if obj.metadata.deletionTimestamp ~= nil then
  error("the schedule is being deleted", 0)
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  error("the operator has not acted on the latest spec yet: try again once it has", 0)
end
for _, c in ipairs(status.conditions or {}) do
  if c.type == "Stalled" and c.status == "True" then
    error("the schedule is stalled (" .. (c.reason or "invalid") .. "): fix its spec first", 0)
  end
end
local requested = annotations["kube-dss.dev/create-build"]
if requested ~= nil and requested ~= status.lastHandledCreateBuildAnnotation then
  error("a build is already requested (kube-dss.dev/create-build=" .. requested .. ")", 0)
end

local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
if requested == stamp then
  error("a build was already requested this second", 0)
end
annotations["kube-dss.dev/create-build"] = stamp
obj.metadata.annotations = annotations
return obj
