package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	jsonpatch "github.com/evanphx/json-patch"
	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// resourceAction is one entry of a discovery result: Argo CD's ResourceAction.
type resourceAction struct {
	Name        string                   `json:"name,omitempty"`
	Params      []map[string]interface{} `json:"params,omitempty"`
	Disabled    bool                     `json:"disabled,omitempty"`
	IconClass   string                   `json:"iconClass,omitempty"`
	DisplayName string                   `json:"displayName,omitempty"`
}

// discoverActions runs a discovery.lua as Argo CD's ExecuteResourceActionDiscovery does: the script
// returns a table of action name -> {disabled = bool, iconClass = ..., displayName = ...} (or {} for
// an enabled action with no settings); an empty table means no action. Sorted by name.
func discoverActions(u *unstructured.Unstructured, script string) ([]resourceAction, error) {
	data, err := tableResult(u, script, nil)
	if err != nil {
		return nil, err
	}
	if string(data) == "[]" {
		return nil, nil
	}
	var table map[string]interface{}
	if err := json.Unmarshal(data, &table); err != nil {
		return nil, fmt.Errorf("error unmarshaling action table: %w", err)
	}
	var actions []resourceAction
	for name, value := range table {
		action := resourceAction{Name: name, Disabled: disabledFlag(value)}
		if _, empty := value.([]interface{}); !empty {
			raw, err := json.Marshal(value)
			if err != nil {
				return nil, fmt.Errorf("error marshaling resource action: %w", err)
			}
			if err := json.Unmarshal(raw, &action); err != nil {
				return nil, fmt.Errorf("error unmarshaling resource action: %w", err)
			}
		}
		actions = append(actions, action)
	}
	sort.Slice(actions, func(i, j int) bool { return actions[i].Name < actions[j].Name })
	return actions, nil
}

// tableResult runs a discovery or action script and JSON-encodes the table it returns, as Argo CD does
// (layeh.com/gopher-json: an empty table is [], a sequence an array, other tables objects).
func tableResult(u *unstructured.Unstructured, script string, params map[string]string) ([]byte, error) {
	l, err := runLua(u.Object, script, params)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type().String())
	}
	data, err := luajson.Encode(ret)
	if err != nil {
		return nil, fmt.Errorf("error in converting to lua table: %w", err)
	}
	return data, nil
}

// disabledFlag is Argo CD's isActionDisabled: actions are enabled unless `disabled` is the boolean true.
func disabledFlag(value interface{}) bool {
	m, ok := value.(map[string]interface{})
	if !ok {
		return false
	}
	b, ok := m["disabled"].(bool)
	return ok && b
}

// The operations an action may ask for (argo-cd util/lua impacted_resource.go).
const (
	opCreate = "create"
	opPatch  = "patch"
)

// impactedResource is one object an action returns and what Argo CD does with it.
type impactedResource struct {
	Object    *unstructured.Unstructured
	Operation string
}

// runAction runs an action.lua as Argo CD's ExecuteResourceAction does. The script returns either the
// modified object (the classic form: Argo CD patches the live object to it) or a list of
// {operation = "create" | "patch", resource = object}. Every object must decode as a Kubernetes object
// (kind set). A patched object is cleaned the way Argo CD cleans it (cleanReturnedObj): Lua cannot tell
// an empty map from an empty list, so an empty table where the input held a map becomes a map again.
func runAction(u *unstructured.Unstructured, script string, params map[string]string) ([]impactedResource, error) {
	data, err := tableResult(u, script, params)
	if err != nil {
		return nil, err
	}
	if len(data) < 2 {
		return nil, errors.New("Lua output was not a valid json object or array")
	}
	var out []impactedResource
	if data[0] == '[' && data[len(data)-1] == ']' {
		var list []struct {
			Resource  json.RawMessage `json:"resource"`
			Operation json.RawMessage `json:"operation"`
		}
		if err := json.Unmarshal(data, &list); err != nil {
			return nil, err
		}
		for _, item := range list {
			var op string
			switch string(item.Operation) {
			case `"create"`:
				op = opCreate
			case `"patch"`:
				op = opPatch
			default:
				return nil, fmt.Errorf("unsupported operation: %s", item.Operation)
			}
			obj := &unstructured.Unstructured{}
			if err := obj.UnmarshalJSON(item.Resource); err != nil {
				return nil, err
			}
			out = append(out, impactedResource{Object: obj, Operation: op})
		}
	} else {
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(data); err != nil {
			return nil, err
		}
		out = append(out, impactedResource{Object: obj, Operation: opPatch})
	}
	for _, r := range out {
		if r.Operation == opPatch {
			r.Object.Object = cleanReturnedObj(r.Object.Object, u.Object)
		}
	}
	return out, nil
}

// cleanReturnedObj turns back into maps the empty maps of the input that Lua returned as empty lists.
func cleanReturnedObj(newObj, obj map[string]interface{}) map[string]interface{} {
	for key, oldValue := range obj {
		newValue, ok := newObj[key]
		if !ok {
			continue
		}
		switch nv := newValue.(type) {
		case map[string]interface{}:
			if ov, ok := oldValue.(map[string]interface{}); ok {
				newObj[key] = cleanReturnedObj(nv, ov)
			}
		case []interface{}:
			switch ov := oldValue.(type) {
			case map[string]interface{}:
				if len(nv) == 0 {
					newObj[key] = map[string]interface{}{}
				}
			case []interface{}:
				newObj[key] = cleanReturnedArray(nv, ov)
			}
		}
	}
	return newObj
}

func cleanReturnedArray(newArr, arr []interface{}) []interface{} {
	for i := range newArr {
		if i >= len(arr) {
			break
		}
		switch nv := newArr[i].(type) {
		case map[string]interface{}:
			if ov, ok := arr[i].(map[string]interface{}); ok {
				newArr[i] = cleanReturnedObj(nv, ov)
			}
		case []interface{}:
			if ov, ok := arr[i].([]interface{}); ok {
				newArr[i] = cleanReturnedArray(nv, ov)
			}
		}
	}
	return newArr
}

// mergePatch is the JSON merge patch Argo CD sends to the live object for a patch operation
// (server/application RunResourceActionV2 -> patchResource). "{}" means nothing is sent.
func mergePatch(live, patched *unstructured.Unstructured) (string, error) {
	before, err := json.Marshal(live.Object)
	if err != nil {
		return "", err
	}
	after, err := json.Marshal(patched.Object)
	if err != nil {
		return "", err
	}
	patch, err := jsonpatch.CreateMergePatch(before, after)
	if err != nil {
		return "", err
	}
	return string(patch), nil
}
