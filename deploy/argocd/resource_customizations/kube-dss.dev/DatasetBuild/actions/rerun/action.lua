-- Requests one more run of the same definition: stamps kube-dss.dev/rerun with the time (UTC). The
-- operator starts one DSS job per distinct value, as for a new spec.rerunToken. Refused when
-- discovery.lua disables it (Argo CD runs a disabled action when asked through its API or CLI).
-- `kubectl dss rerun` applies the same rules.
local os = require("os")

local status = obj.status or {}
local annotations = obj.metadata.annotations or {}
local generation = obj.metadata.generation
if obj.metadata.deletionTimestamp ~= nil then
  error("the build is being deleted", 0)
end
if obj.spec.suspend == true then
  error("the build is suspended: resume it first", 0)
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  error("the operator has not acted on the latest spec yet: rerun once it has", 0)
end
if status.phase ~= "Succeeded" and status.phase ~= "Failed" and status.phase ~= "Aborted" then
  error("the last run has not finished (phase " .. (status.phase or "none") .. "): nothing to rerun yet", 0)
end
local requested = annotations["kube-dss.dev/rerun"]
if requested ~= nil and requested ~= status.lastHandledRerunAnnotation then
  error("a rerun is already requested (kube-dss.dev/rerun=" .. requested .. ")", 0)
end

local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
if requested == stamp then
  error("a rerun was already requested this second", 0)
end
annotations["kube-dss.dev/rerun"] = stamp
obj.metadata.annotations = annotations
return obj
