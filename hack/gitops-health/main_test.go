package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func build() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "kube-dss.dev/v1alpha1", "kind": "DatasetBuild",
		"metadata": map[string]interface{}{"name": "b", "namespace": "ns", "annotations": map[string]interface{}{}},
		"spec":     map[string]interface{}{"projectKey": "P"},
	}}
}

// The Lua environment and result handling Argo CD applies to health scripts.
func TestHealth(t *testing.T) {
	clock = func() time.Time { return testClock }
	cases := []struct {
		name, script string
		want         healthStatus
		wantErr      string
	}{
		{"a known code", `return {status = "Healthy", message = "ok"}`, healthStatus{"Healthy", "ok"}, ""},
		{"nil is an empty status", `return nil`, healthStatus{}, ""},
		{"an empty table is an empty status", `return {}`, healthStatus{}, ""},
		{"a non-string message is an empty status", `return {status = "Healthy", message = 5}`, healthStatus{}, ""},
		{"an unknown code is Unknown", `return {status = "Fine"}`, healthStatus{"Unknown", "Lua returned an invalid health status"}, ""},
		{"a string is an error", `return "Healthy"`, healthStatus{}, "expect table output from Lua script, not string"},
		{"no string library", `return {status = string.lower("HEALTHY")}`, healthStatus{}, "string"},
		{"no math library", `return {status = "Healthy", message = "" .. math.floor(1.5)}`, healthStatus{}, "floor"},
		{"the safe os as a global", `return {status = "Healthy", message = os.date("!%Y-%m-%dT%H:%M:%SZ")}`, healthStatus{"Healthy", "2001-02-03T04:05:06Z"}, ""},
		{"the safe os by require", `local os = require("os"); return {status = "Healthy", message = "" .. os.time()}`, healthStatus{"Healthy", "981173106"}, ""},
		{"no os.exit", `os.exit(1)`, healthStatus{}, "attempt to call a non-function object"},
		{"a one-second limit", `while true do end`, healthStatus{}, "context deadline exceeded"},
		{"error text without a stack trace", `error("broken", 0)`, healthStatus{}, "broken"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := argocdHealth(build(), c.script)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				if strings.Contains(err.Error(), "stack traceback") {
					t.Fatalf("error keeps its stack trace: %v", err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestDiscovery(t *testing.T) {
	cases := []struct {
		name, script, want, wantErr string
	}{
		{"no action", `return {}`, "(none)", ""},
		{"an empty table is enabled", `return {rerun = {}}`, "rerun=enabled", ""},
		{"disabled true", `return {rerun = {disabled = true}, abort = {disabled = false}}`, "abort=enabled rerun=disabled", ""},
		{"a non-boolean disabled is an error", `return {rerun = {disabled = "yes"}}`, "", "error unmarshaling resource action"},
		{"not a table", `return true`, "", "expect table output"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := discoverActions(build(), c.script)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || summarizeActions(got) != c.want {
				t.Fatalf("got %s, %v; want %s", summarizeActions(got), err, c.want)
			}
		})
	}
}

func TestAction(t *testing.T) {
	cases := []struct {
		name, script, want, wantErr string
	}{
		{"the classic form is a patch", `obj.spec.suspend = true; return obj`, `patch {"spec":{"suspend":true}}`, ""},
		{"an emptied map stays a map", `obj.metadata.annotations = {}; obj.spec.x = 1; return obj`, `patch {"spec":{"x":1}}`, ""},
		{"a list with a create", `return {{operation = "create", resource = {apiVersion = "v1", kind = "ConfigMap", metadata = {name = "c"}}}}`, "create ConfigMap c", ""},
		{"an unknown operation", `return {{operation = "delete", resource = obj}}`, "", `unsupported operation: "delete"`},
		{"an object without kind", `return {spec = {}}`, "", "Object 'Kind' is missing"},
		{"a script error is shown as is", `error("no active DSS job to abort", 0)`, "", "no active DSS job to abort"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := build()
			got, err := runAction(src.DeepCopy(), c.script, nil)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || len(got) != 1 {
				t.Fatalf("got %v, %v", got, err)
			}
			var desc string
			if got[0].Operation == opPatch {
				patch, err := mergePatch(src, got[0].Object)
				if err != nil {
					t.Fatal(err)
				}
				desc = "patch " + patch
			} else {
				desc = "create " + got[0].Object.GetKind() + " " + got[0].Object.GetName()
			}
			if desc != c.want {
				t.Fatalf("got %s, want %s", desc, c.want)
			}
		})
	}
}

// The test runner must fail a wrong script or a wrong expectation, not only pass good ones.
func TestCustomizationsRunnerFails(t *testing.T) {
	input := `apiVersion: kube-dss.dev/v1alpha1
kind: DatasetBuild
metadata: {name: b, namespace: ns}
spec: {projectKey: P}
`
	suspended := strings.Replace(input, "spec: {projectKey: P}", "spec: {projectKey: P, suspend: true}", 1)
	good := map[string]string{
		"kube-dss.dev/DatasetBuild/health.lua":                 `return {status = "Healthy"}`,
		"kube-dss.dev/DatasetBuild/health_test.yaml":           "tests:\n- inputPath: actions/testdata/b.yaml\n  healthStatus: {status: Healthy}\n",
		"kube-dss.dev/DatasetBuild/actions/discovery.lua":      `return {suspend = {}}`,
		"kube-dss.dev/DatasetBuild/actions/suspend/action.lua": "obj.spec.suspend = true\nreturn obj\n",
		"kube-dss.dev/DatasetBuild/actions/action_test.yaml": `discoveryTests:
- inputPath: testdata/b.yaml
  result: [{name: suspend}]
actionTests:
- action: suspend
  inputPath: testdata/b.yaml
  expectedOutputPath: testdata/b-suspended.yaml
`,
		"kube-dss.dev/DatasetBuild/actions/testdata/b.yaml":           input,
		"kube-dss.dev/DatasetBuild/actions/testdata/b-suspended.yaml": suspended,
	}
	cases := []struct {
		name    string
		change  map[string]string
		failing int
	}{
		{"all good", nil, 0},
		{"a wrong health expectation", map[string]string{"kube-dss.dev/DatasetBuild/health.lua": `return {status = "Degraded"}`}, 1},
		{"a wrong action output", map[string]string{"kube-dss.dev/DatasetBuild/actions/suspend/action.lua": "obj.spec.suspend = false\nreturn obj\n"}, 1},
		{"an extra field in the output", map[string]string{"kube-dss.dev/DatasetBuild/actions/suspend/action.lua": "obj.spec.suspend = true\nobj.spec.x = 1\nreturn obj\n"}, 1},
		{"a status write", map[string]string{
			"kube-dss.dev/DatasetBuild/actions/suspend/action.lua":        "obj.spec.suspend = true\nobj.status = {phase = \"Suspended\"}\nreturn obj\n",
			"kube-dss.dev/DatasetBuild/actions/testdata/b-suspended.yaml": suspended + "status: {phase: Suspended}\n",
		}, 1},
		{"a discovery mismatch", map[string]string{"kube-dss.dev/DatasetBuild/actions/discovery.lua": `return {suspend = {disabled = true}}`}, 1},
		{"a discovered action without a script", map[string]string{"kube-dss.dev/DatasetBuild/actions/discovery.lua": `return {suspend = {}, resume = {}}`}, 1},
		{"an action without a test", map[string]string{"kube-dss.dev/DatasetBuild/actions/resume/action.lua": "return obj\n"}, 2},
		{"a missing health test file", map[string]string{"kube-dss.dev/DatasetBuild/health_test.yaml": ""}, 1},
		{"a typo in a test file", map[string]string{"kube-dss.dev/DatasetBuild/actions/action_test.yaml": "discoveryTest: []\n"}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			files := map[string]string{}
			for k, v := range good {
				files[k] = v
			}
			for k, v := range c.change {
				files[k] = v
			}
			for path, text := range files {
				if text == "" {
					continue
				}
				full := filepath.Join(root, filepath.FromSlash(path))
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			if got := runCustomizations([]string{root}, &out); got != c.failing {
				t.Fatalf("%d failures, want %d:\n%s", got, c.failing, out.String())
			}
		})
	}
}
