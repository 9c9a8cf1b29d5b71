-- Argo CD resource actions of a kube-dss.dev/v1alpha1 DatasetBuildSchedule, and which apply now:
--   create-build  build the current slot now, as `kubectl create job --from=cronjob/...` does for a
--                 CronJob (annotation kube-dss.dev/create-build: the operator creates the build the
--                 schedule would create for that slot, with its placeholders, once per value; the same
--                 as `kube-dss schedules run`); only when the schedule is valid, the operator has seen
--                 the latest spec and no request is pending. Allowed while suspended, as for a CronJob.
--   suspend       spec.suspend = true: no build is created; when not suspended
--   resume        spec.suspend = false (missed slots are caught up per spec.catchUp); when suspended
-- Nothing applies to a schedule being deleted: its builds are being deleted.
--
-- Argo CD runs this WITHOUT the Lua standard libraries: no string.* or math.* calls.

local actions = {}
local status = obj.status or {}
local annotations = obj.metadata.annotations or {}
local deleting = obj.metadata.deletionTimestamp ~= nil
local suspended = obj.spec.suspend == true

local function stalled()
  for _, c in ipairs(status.conditions or {}) do
    if c.type == "Stalled" and c.status == "True" then
      return true
    end
  end
  return false
end

local generation = obj.metadata.generation
local current = generation == nil or (status.observedGeneration ~= nil and status.observedGeneration >= generation)
local requested = annotations["kube-dss.dev/create-build"]
local pending = requested ~= nil and requested ~= status.lastHandledCreateBuildAnnotation

actions["create-build"] = {
  iconClass = "fa fa-fw fa-plus",
  displayName = "Create build now",
  disabled = deleting or not current or stalled() or pending,
}
actions["suspend"] = { iconClass = "fa fa-fw fa-pause", displayName = "Suspend", disabled = deleting or suspended }
actions["resume"] = { iconClass = "fa fa-fw fa-play", displayName = "Resume", disabled = deleting or not suspended }
return actions
