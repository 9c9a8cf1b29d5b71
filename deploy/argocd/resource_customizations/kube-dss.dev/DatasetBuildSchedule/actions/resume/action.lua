-- spec.suspend = false: builds are created again; slots missed while suspended are caught up per
-- spec.catchUp, within spec.startingDeadlineSeconds.
obj.spec.suspend = false
return obj
