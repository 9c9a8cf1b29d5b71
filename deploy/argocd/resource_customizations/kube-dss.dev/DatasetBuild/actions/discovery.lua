-- Argo CD resource actions of a kube-dss.dev/v1alpha1 DatasetBuild, and which apply now:
--   rerun    one more run of the same definition (annotation kube-dss.dev/rerun); only when the last
--            run has finished (Succeeded, Failed, Aborted) and the operator has seen the latest spec,
--            no rerun request is pending, and the build is not suspended
--   suspend  spec.suspend = true: no new DSS job starts (an active one continues); when not suspended
--   resume   spec.suspend = false; when suspended
--   abort    abort the active DSS job, keep the build (annotation kube-dss.dev/abort; phase Aborted,
--            reason AbortRequested); only while a job is queued or running in DSS and no abort is
--            already under way
-- Nothing applies to a build being deleted: its finalizer is aborting the job.
--
-- Argo CD runs this WITHOUT the Lua standard libraries: no string.* or math.* calls.

local actions = {}
local status = obj.status or {}
local annotations = obj.metadata.annotations or {}
local deleting = obj.metadata.deletionTimestamp ~= nil
local suspended = obj.spec.suspend == true

-- A request stamped in an annotation that the operator has not acted upon yet.
local function pending(annotation, handled)
  local value = annotations[annotation]
  return value ~= nil and value ~= handled
end

local generation = obj.metadata.generation
local current = generation == nil or (status.observedGeneration ~= nil and status.observedGeneration >= generation)
local finished = status.phase == "Succeeded" or status.phase == "Failed" or status.phase == "Aborted"
local job_active = status.jobId ~= nil and (status.phase == "Queued" or status.phase == "Running")
local aborting = status.abortRequest ~= nil or pending("kube-dss.dev/abort", status.lastHandledAbortAnnotation)

actions["rerun"] = {
  iconClass = "fa fa-fw fa-redo",
  displayName = "Rerun",
  disabled = deleting or suspended or not current or not finished
    or pending("kube-dss.dev/rerun", status.lastHandledRerunAnnotation),
}
actions["suspend"] = { iconClass = "fa fa-fw fa-pause", displayName = "Suspend", disabled = deleting or suspended }
actions["resume"] = { iconClass = "fa fa-fw fa-play", displayName = "Resume", disabled = deleting or not suspended }
actions["abort"] = {
  iconClass = "fa fa-fw fa-stop",
  displayName = "Abort DSS job",
  disabled = deleting or not job_active or aborting,
}
return actions
