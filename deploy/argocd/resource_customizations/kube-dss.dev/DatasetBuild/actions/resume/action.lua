-- spec.suspend = false: a run request that waited while suspended starts.
obj.spec.suspend = false
return obj
