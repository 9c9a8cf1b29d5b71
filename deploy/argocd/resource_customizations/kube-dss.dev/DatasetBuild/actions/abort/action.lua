-- Aborts the build's active DSS job without deleting the build: stamps kube-dss.dev/abort with the time
-- (UTC). The operator aborts the active job once per distinct value (status.lastHandledAbortAnnotation
-- records the value handled); the build ends Aborted, Stalled reason AbortRequested. Refused when no
-- job is queued or running, as discovery.lua shows it (a value set then would be recorded and do
-- nothing).
local os = require("os")

local status = obj.status or {}
if obj.metadata.deletionTimestamp ~= nil then
  error("the build is being deleted: its finalizer aborts the job", 0)
end
if status.jobId == nil or (status.phase ~= "Queued" and status.phase ~= "Running") then
  error("no DSS job is queued or running (phase " .. (status.phase or "none") .. ")", 0)
end

if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
if obj.metadata.annotations["kube-dss.dev/abort"] == stamp then
  error("an abort was already requested this second", 0)
end
obj.metadata.annotations["kube-dss.dev/abort"] = stamp
return obj
