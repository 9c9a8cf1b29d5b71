-- Aborts the build's active DSS job without deleting the build: stamps kube-dss.dev/abort with the time
-- (UTC). The operator aborts the active job once per distinct value (status.lastHandledAbortAnnotation
-- records the value handled); the build ends Aborted, Stalled reason AbortRequested. Refused when
-- discovery.lua disables it: no job queued or running (a value set then would be recorded and do
-- nothing), or an abort already under way. `kubectl dss abort` applies the same rules.
local os = require("os")

local status = obj.status or {}
local annotations = obj.metadata.annotations or {}
if obj.metadata.deletionTimestamp ~= nil then
  error("the build is being deleted: its finalizer aborts the job", 0)
end
if status.jobId == nil or (status.phase ~= "Queued" and status.phase ~= "Running") then
  error("no DSS job is queued or running (phase " .. (status.phase or "none") .. ")", 0)
end
local requested = annotations["kube-dss.dev/abort"]
if requested ~= nil and requested ~= status.lastHandledAbortAnnotation then
  error("an abort is already requested (kube-dss.dev/abort=" .. requested .. ")", 0)
end
if status.abortRequest ~= nil then
  error("the operator is already aborting the job (" .. (status.abortRequest.reason or "abort requested") .. ")", 0)
end

local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
if requested == stamp then
  error("an abort was already requested this second", 0)
end
annotations["kube-dss.dev/abort"] = stamp
obj.metadata.annotations = annotations
return obj
