-- Requests one more run of the same definition: stamps kube-dss.dev/rerun with the time (UTC). The
-- operator starts one DSS job per distinct value, as for a new spec.rerunToken. Refused while a run is
-- not finished, as discovery.lua shows it (Argo CD does not enforce a disabled action itself).
local os = require("os")

local status = obj.status or {}
if obj.metadata.deletionTimestamp ~= nil then
  error("the build is being deleted", 0)
end
if obj.spec.suspend == true then
  error("the build is suspended: resume it first", 0)
end
if status.phase ~= "Succeeded" and status.phase ~= "Failed" and status.phase ~= "Aborted" then
  error("the last run has not finished (phase " .. (status.phase or "none") .. "): nothing to rerun yet", 0)
end

if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
if obj.metadata.annotations["kube-dss.dev/rerun"] == stamp then
  error("a rerun was already requested this second", 0)
end
obj.metadata.annotations["kube-dss.dev/rerun"] = stamp
return obj
