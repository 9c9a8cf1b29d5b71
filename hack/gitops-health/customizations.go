package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// A resource_customizations tree, laid out as Argo CD's own repository lays out its built-in scripts:
//
//	ROOT/<group>/<Kind>/health.lua
//	ROOT/<group>/<Kind>/health_test.yaml             tests: [{inputPath, healthStatus: {status, message}}]
//	ROOT/<group>/<Kind>/actions/discovery.lua
//	ROOT/<group>/<Kind>/actions/<action>/action.lua
//	ROOT/<group>/<Kind>/actions/action_test.yaml     discoveryTests: [{inputPath, result: [ResourceAction]}]
//	                                                 actionTests: [{action, inputPath, expectedOutputPath,
//	                                                                expectedErrorMessage, parameters}]
//	ROOT/<group>/<Kind>/actions/testdata/*.yaml
//
// runCustomizations runs every test of the tree as argo-cd's util/lua tests (TestLuaHealthScript,
// TestLuaResourceActionsScript) run theirs: the script is chosen by the test object's group/Kind, paths
// are relative to the test file. It is stricter where upstream lets a broken script pass:
//   - scripts run as Argo CD runs scripts from argocd-cm, without the Lua standard libraries (upstream
//     opens them for health and discovery tests of built-in scripts);
//   - a discovery result must equal the expected list (upstream only checks that each discovered
//     action is listed), and every discovered action must have an action.lua;
//   - an action's output must equal the expected objects exactly, as many as expected, with the
//     expected operation (upstream diffs ignore fields the expected object lacks), a patch must target
//     the source object and must not write .status (only the operator writes status);
//   - every health.lua needs a health_test.yaml, every action a test of its own and a place in a
//     discovery result;
//   - os.time() and os.date() read a frozen clock, testClock (UTC), so an action stamping the time has
//     one exact expected output (upstream normalises such fields away per kind).
var testClock = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

type healthTestFile struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus healthStatus `json:"healthStatus"`
	} `json:"tests"`
}

type actionTestFile struct {
	DiscoveryTests []struct {
		InputPath string           `json:"inputPath"`
		Result    []resourceAction `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action               string            `json:"action"`
		InputPath            string            `json:"inputPath"`
		ExpectedOutputPath   string            `json:"expectedOutputPath"`
		ExpectedErrorMessage string            `json:"expectedErrorMessage"`
		Parameters           map[string]string `json:"parameters"`
	} `json:"actionTests"`
}

// report collects one line per test: "ok   NAME [detail]" or "FAIL NAME: why".
type report struct {
	out      io.Writer
	ok, fail int
}

func (r *report) pass(name, detail string) {
	r.ok++
	if detail != "" {
		fmt.Fprintf(r.out, "ok   %s  %s\n", name, detail)
	} else {
		fmt.Fprintf(r.out, "ok   %s\n", name)
	}
}

func (r *report) failf(name, format string, args ...interface{}) {
	r.fail++
	fmt.Fprintf(r.out, "FAIL %s: %s\n", name, fmt.Sprintf(format, args...))
}

// runCustomizations runs the tests of each root and returns the number of failures.
func runCustomizations(roots []string, out io.Writer) int {
	clock = func() time.Time { return testClock }
	time.Local = time.UTC
	r := &report{out: out}
	for _, root := range roots {
		kinds, err := kindDirs(root)
		if err != nil {
			r.failf(root, "%v", err)
			continue
		}
		if len(kinds) == 0 {
			r.failf(root, "no <group>/<Kind> directory with a health.lua or actions/")
		}
		for _, key := range kinds {
			dir := filepath.Join(root, filepath.FromSlash(key))
			if fileExists(filepath.Join(dir, "health.lua")) {
				runHealthTests(r, root, key, dir)
			}
			if dirExists(filepath.Join(dir, "actions")) {
				runActionTests(r, root, key, filepath.Join(dir, "actions"))
			}
		}
	}
	fmt.Fprintf(out, "resource_customizations: %d passed, %d failed\n", r.ok, r.fail)
	return r.fail
}

// kindDirs lists the group/Kind keys of a tree: directories two levels down holding health.lua or
// actions/.
func kindDirs(root string) ([]string, error) {
	groups, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, g := range groups {
		if !g.IsDir() {
			continue
		}
		kinds, err := os.ReadDir(filepath.Join(root, g.Name()))
		if err != nil {
			return nil, err
		}
		for _, k := range kinds {
			dir := filepath.Join(root, g.Name(), k.Name())
			if k.IsDir() && (fileExists(filepath.Join(dir, "health.lua")) || dirExists(filepath.Join(dir, "actions"))) {
				keys = append(keys, g.Name()+"/"+k.Name())
			}
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func runHealthTests(r *report, root, key, dir string) {
	var tests healthTestFile
	if err := readStrictYAML(filepath.Join(dir, "health_test.yaml"), &tests); err != nil {
		r.failf(key+" health", "%v (every health.lua needs its tests)", err)
		return
	}
	if len(tests.Tests) == 0 {
		r.failf(key+" health", "health_test.yaml has no tests")
	}
	for _, t := range tests.Tests {
		name := key + " health " + filepath.Clean(filepath.Join(dir, t.InputPath))
		obj, script, err := objectAndScript(root, filepath.Join(dir, t.InputPath), "health.lua")
		if err != nil {
			r.failf(name, "%v", err)
			continue
		}
		got, err := argocdHealth(obj, script)
		if err != nil {
			r.failf(name, "%v", err)
		} else if got != t.HealthStatus {
			r.failf(name, "got %s %q, want %s %q", got.Status, got.Message, t.HealthStatus.Status, t.HealthStatus.Message)
		} else {
			r.pass(name, got.Status)
		}
	}
}

func runActionTests(r *report, root, key, dir string) {
	var tests actionTestFile
	if err := readStrictYAML(filepath.Join(dir, "action_test.yaml"), &tests); err != nil {
		r.failf(key+" actions", "%v", err)
		return
	}
	defined := actionNames(dir)
	discovered := map[string]bool{}
	for _, t := range tests.DiscoveryTests {
		name := key + " discovery " + filepath.Clean(filepath.Join(dir, t.InputPath))
		obj, script, err := objectAndScript(root, filepath.Join(dir, t.InputPath), filepath.Join("actions", "discovery.lua"))
		if err != nil {
			r.failf(name, "%v", err)
			continue
		}
		got, err := discoverActions(obj, script)
		if err != nil {
			r.failf(name, "%v", err)
			continue
		}
		want := append([]resourceAction(nil), t.Result...)
		sort.Slice(want, func(i, j int) bool { return want[i].Name < want[j].Name })
		var undefined []string
		for _, a := range got {
			discovered[a.Name] = true
			if !defined[a.Name] {
				undefined = append(undefined, a.Name)
			}
		}
		switch {
		case len(undefined) > 0:
			r.failf(name, "discovered actions without an actions/<name>/action.lua: %s", strings.Join(undefined, ", "))
		case !reflect.DeepEqual(normalize(got), normalize(want)):
			r.failf(name, "got %s, want %s", summarizeActions(got), summarizeActions(want))
		default:
			r.pass(name, summarizeActions(got))
		}
	}
	tested := map[string]bool{}
	for _, t := range tests.ActionTests {
		tested[t.Action] = true
		name := fmt.Sprintf("%s action %s %s", key, t.Action, filepath.Clean(filepath.Join(dir, t.InputPath)))
		detail, err := checkAction(root, dir, t.Action, t.InputPath, t.ExpectedOutputPath, t.ExpectedErrorMessage, t.Parameters)
		if err != nil {
			r.failf(name, "%v", err)
		} else {
			r.pass(name, detail)
		}
	}
	for _, a := range sortedKeys(defined) {
		if !tested[a] {
			r.failf(key+" action "+a, "no test in action_test.yaml")
		}
		if !discovered[a] {
			r.failf(key+" action "+a, "no discovery test returns it")
		}
	}
}

// checkAction runs one action test and returns what Argo CD would do (the merge patch, or the created
// objects), or why the test fails.
func checkAction(root, dir, action, input, expected, expectedErr string, params map[string]string) (string, error) {
	src, script, err := objectAndScript(root, filepath.Join(dir, input), filepath.Join("actions", action, "action.lua"))
	if err != nil {
		return "", err
	}
	impacted, err := runAction(src, script, params)
	if expectedErr != "" {
		if err == nil {
			return "", fmt.Errorf("succeeded, want the error %q", expectedErr)
		}
		if err.Error() != expectedErr {
			return "", fmt.Errorf("error %q, want %q", err.Error(), expectedErr)
		}
		return "error " + err.Error(), nil
	}
	if err != nil {
		return "", err
	}
	want, err := expectedObjects(filepath.Join(dir, expected))
	if err != nil {
		return "", err
	}
	if len(impacted) != len(want) {
		return "", fmt.Errorf("returned %d objects, want %d", len(impacted), len(want))
	}
	var details []string
	for _, got := range impacted {
		exp := findExpected(want, got.Object)
		if exp == nil {
			return "", fmt.Errorf("returned %s %s/%s, which %s does not hold", got.Object.GetKind(),
				got.Object.GetNamespace(), got.Object.GetName(), expected)
		}
		if exp.operation != "" && exp.operation != got.Operation {
			return "", fmt.Errorf("%s %s: operation %s, want %s", got.Object.GetKind(), got.Object.GetName(), got.Operation, exp.operation)
		}
		if diffs := diffValues("", normalize(exp.object.Object), normalize(got.Object.Object)); len(diffs) > 0 {
			return "", fmt.Errorf("%s %s differs from %s:\n    %s", got.Object.GetKind(), got.Object.GetName(), expected, strings.Join(diffs, "\n    "))
		}
		switch got.Operation {
		case opPatch:
			if got.Object.GroupVersionKind() != src.GroupVersionKind() || got.Object.GetName() != src.GetName() ||
				got.Object.GetNamespace() != src.GetNamespace() {
				return "", fmt.Errorf("patches %s %s, but only the source object may be patched", got.Object.GetKind(), got.Object.GetName())
			}
			patch, err := mergePatch(src, got.Object)
			if err != nil {
				return "", err
			}
			var fields map[string]interface{}
			if err := json.Unmarshal([]byte(patch), &fields); err != nil {
				return "", err
			}
			if _, ok := fields["status"]; ok {
				return "", fmt.Errorf("the patch %s writes .status, which only the operator writes", patch)
			}
			details = append(details, "patch "+patch)
		case opCreate:
			details = append(details, fmt.Sprintf("create %s %s", got.Object.GetKind(), got.Object.GetName()))
		}
	}
	return strings.Join(details, "; "), nil
}

type expectedObject struct {
	operation string // "" when the file does not say (the classic single-object form means patch)
	object    *unstructured.Unstructured
}

// expectedObjects reads an expected output: one object (the classic form: a patch of the source), or a
// list of {k8sOperation, unstructuredObj} as in Argo CD's testdata for actions that create objects.
func expectedObjects(path string) ([]expectedObject, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(strings.TrimSpace(string(data)), "-") {
		var items []struct {
			K8sOperation    string                 `json:"k8sOperation"`
			UnstructuredObj map[string]interface{} `json:"unstructuredObj"`
		}
		if err := yaml.UnmarshalStrict(data, &items); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var out []expectedObject
		for i, item := range items {
			if item.UnstructuredObj == nil {
				return nil, fmt.Errorf("%s: item %d has no unstructuredObj", path, i)
			}
			switch item.K8sOperation {
			case "", opCreate, opPatch:
			default:
				return nil, fmt.Errorf("%s: item %d: unknown k8sOperation %q", path, i, item.K8sOperation)
			}
			out = append(out, expectedObject{item.K8sOperation, &unstructured.Unstructured{Object: item.UnstructuredObj}})
		}
		return out, nil
	}
	obj, err := readObject(path)
	if err != nil {
		return nil, err
	}
	return []expectedObject{{opPatch, obj}}, nil
}

func findExpected(want []expectedObject, got *unstructured.Unstructured) *expectedObject {
	for i := range want {
		w := want[i].object
		if w.GroupVersionKind() == got.GroupVersionKind() && w.GetName() == got.GetName() && w.GetNamespace() == got.GetNamespace() {
			return &want[i]
		}
	}
	return nil
}

// objectAndScript reads a test object and the script of its group/Kind under root.
func objectAndScript(root, objPath, script string) (*unstructured.Unstructured, string, error) {
	obj, err := readObject(objPath)
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(root, filepath.FromSlash(argocdKey(obj)), script)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("%s is a %s, which has no %s: %w", objPath, argocdKey(obj), script, err)
	}
	return obj, string(data), nil
}

// actionNames lists the actions of an actions/ directory: its subdirectories holding action.lua.
func actionNames(dir string) map[string]bool {
	names := map[string]bool{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return names
	}
	for _, e := range entries {
		if e.IsDir() && fileExists(filepath.Join(dir, e.Name(), "action.lua")) {
			names[e.Name()] = true
		}
	}
	return names
}

func summarizeActions(actions []resourceAction) string {
	var parts []string
	for _, a := range actions {
		state := "enabled"
		if a.Disabled {
			state = "disabled"
		}
		parts = append(parts, a.Name+"="+state)
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

// normalize turns a value into what JSON makes of it (numbers float64, structs maps), so that an object
// read from YAML and one returned by Lua compare equal when Argo CD would send the same bytes.
func normalize(v interface{}) interface{} {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unencodable: %v", err)
	}
	var out interface{}
	if err := json.Unmarshal(data, &out); err != nil {
		return fmt.Sprintf("undecodable: %v", err)
	}
	return out
}

// diffValues lists the paths where two normalized values differ.
func diffValues(path string, want, got interface{}) []string {
	wm, wok := want.(map[string]interface{})
	gm, gok := got.(map[string]interface{})
	if wok && gok {
		var diffs []string
		keys := map[string]bool{}
		for k := range wm {
			keys[k] = true
		}
		for k := range gm {
			keys[k] = true
		}
		for _, k := range sortedKeys(keys) {
			wv, win := wm[k]
			gv, gin := gm[k]
			switch {
			case !gin:
				diffs = append(diffs, fmt.Sprintf("%s.%s: missing, want %s", path, k, compact(wv)))
			case !win:
				diffs = append(diffs, fmt.Sprintf("%s.%s: unexpected %s", path, k, compact(gv)))
			default:
				diffs = append(diffs, diffValues(path+"."+k, wv, gv)...)
			}
		}
		return diffs
	}
	if !reflect.DeepEqual(want, got) {
		return []string{fmt.Sprintf("%s: got %s, want %s", path, compact(got), compact(want))}
	}
	return nil
}

func compact(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(data)
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func readStrictYAML(path string, into interface{}) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}
