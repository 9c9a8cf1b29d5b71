-- spec.suspend = true: the operator creates no build for this schedule (active builds continue).
obj.spec.suspend = true
return obj
