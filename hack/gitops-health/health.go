package main

import (
	"encoding/json"
	"errors"
	"fmt"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// kstatusHealth is exactly what Flux's health checks and `kpt live status` compute.
func kstatusHealth(u *unstructured.Unstructured) (string, string, error) {
	res, err := status.Compute(u)
	if err != nil {
		return "", "", err
	}
	return res.Status.String(), res.Message, nil
}

// healthStatus is Argo CD's HealthStatus (gitops-engine pkg/health).
type healthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// The health codes Argo CD accepts from a script (gitops-engine pkg/health HealthStatusCode).
var argocdHealthCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Healthy": true, "Suspended": true, "Degraded": true, "Missing": true,
}

// argocdHealth runs a health.lua as Argo CD's ExecuteHealthLua does (see runLua for the state):
//   - a table result is JSON-encoded (layeh.com/gopher-json, as Argo CD) into HealthStatus{status,
//     message}; nil, an empty table (encoded []) or a field of another type than string (any JSON type
//     error: Argo CD's errors.As test matches them all) give an empty health status, no error;
//   - a status that is not a known code becomes Unknown "Lua returned an invalid health status";
//   - any other result is an error.
func argocdHealth(u *unstructured.Unstructured, script string) (healthStatus, error) {
	l, err := runLua(u.Object, script, nil)
	if err != nil {
		return healthStatus{}, err
	}
	defer l.Close()
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return healthStatus{}, nil
	case lua.LTTable:
	default:
		return healthStatus{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type().String())
	}
	data, err := luajson.Encode(ret)
	if err != nil {
		return healthStatus{}, err
	}
	var hs healthStatus
	if err := json.Unmarshal(data, &hs); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return healthStatus{}, nil
		}
		return healthStatus{}, err
	}
	if !argocdHealthCodes[hs.Status] {
		return healthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return hs, nil
}
