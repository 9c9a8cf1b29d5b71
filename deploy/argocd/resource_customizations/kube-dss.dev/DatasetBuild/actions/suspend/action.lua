-- spec.suspend = true: the operator starts no new DSS job for this build (an active one continues).
obj.spec.suspend = true
return obj
