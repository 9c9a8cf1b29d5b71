// Command gitops-health computes the health that GitOps tools report for Kubernetes objects, with the
// tools' own logic, so kube-dss can check its status contract against them:
//
//	gitops-health kstatus FILE...                 kstatus (Flux, kpt, cli-utils): Current / InProgress / Failed / ...
//	gitops-health argocd --script [GROUP/KIND=]health.lua... FILE...   Argo CD resource_customizations health
//
// Each FILE holds JSON or YAML: one object, several YAML documents, or a List (as written by
// `kubectl get dsb -o json` / `-o yaml`). "-" reads stdin. For every object it prints one line:
//
//	name<TAB>status<TAB>message
//
// `--script` may be repeated. `--script PATH` applies to every object; `--script GROUP/KIND=PATH` (Argo CD's
// key, e.g. kube-dss.dev/DatasetBuild) only to objects of that kind, as resource_customizations does.
// Objects no script applies to are skipped with a note on stderr.
//
// The exit code is 0 when every object was evaluated, 1 when one could not be (a parse error, a Lua error,
// a script returning something other than a table), 2 on usage errors.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

const usage = `usage:
  gitops-health kstatus FILE...
  gitops-health argocd --script [GROUP/KIND=]HEALTH.lua [--script ...] FILE...

Prints name<TAB>status<TAB>message for every object in the files (JSON or YAML, one object,
several YAML documents or a List; "-" is stdin).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var eval func(*unstructured.Unstructured) (string, string, error)
	files := args[1:]
	switch args[0] {
	case "kstatus":
		eval = kstatusHealth
	case "argocd":
		scripts := map[string]string{} // Argo CD key (group/Kind, or "" for all) -> script
		for len(files) >= 2 && files[0] == "--script" {
			key, path := "", files[1]
			if k, p, ok := strings.Cut(path, "="); ok {
				key, path = k, p
			}
			script, err := os.ReadFile(path)
			if err != nil {
				fmt.Fprintf(stderr, "gitops-health: %v\n", err)
				return 2
			}
			scripts[key] = string(script)
			files = files[2:]
		}
		if len(scripts) == 0 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		eval = func(u *unstructured.Unstructured) (string, string, error) {
			script, ok := scripts[argocdKey(u)]
			if !ok {
				if script, ok = scripts[""]; !ok {
					return "", "", errSkip
				}
			}
			return argocdHealth(u, script)
		}
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if len(files) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}

	out := bufio.NewWriter(stdout)
	defer out.Flush()
	failed := false
	for _, file := range files {
		objs, err := readObjects(file)
		if err != nil {
			fmt.Fprintf(stderr, "gitops-health: %s: %v\n", file, err)
			failed = true
			continue
		}
		for _, u := range objs {
			st, msg, err := eval(u)
			if errors.Is(err, errSkip) {
				fmt.Fprintf(stderr, "gitops-health: %s: %s: skipped: no health script for %s\n", file, u.GetName(), argocdKey(u))
				continue
			}
			if err != nil {
				fmt.Fprintf(stderr, "gitops-health: %s: %s: %v\n", file, u.GetName(), err)
				failed = true
				continue
			}
			fmt.Fprintf(out, "%s\t%s\t%s\n", u.GetName(), st, oneLine(msg))
		}
	}
	if failed {
		return 1
	}
	return 0
}

// errSkip marks an object no Argo CD script applies to.
var errSkip = errors.New("no script")

// argocdKey is the resource_customizations key of an object: group/Kind, or Kind for the core group.
func argocdKey(u *unstructured.Unstructured) string {
	gvk := u.GroupVersionKind()
	if gvk.Group == "" {
		return gvk.Kind
	}
	return gvk.Group + "/" + gvk.Kind
}

// oneLine keeps the output one line per object: messages (DSS log tails) may hold newlines and tabs.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ", "\t", " ").Replace(s)
}

// readObjects reads every object of a file: YAML documents or JSON, with Lists expanded.
func readObjects(file string) ([]*unstructured.Unstructured, error) {
	var r io.Reader
	if file == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	// The YAML reader splits on "---"; a JSON file is one document, and YAML is a superset of JSON.
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var objs []*unstructured.Unstructured
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		data, err := utilyaml.ToJSON(doc)
		if err != nil {
			return nil, err
		}
		if string(data) == "null" {
			continue // a document holding only comments
		}
		// apimachinery's JSON decoding turns integers into int64, as the apiserver and informers do,
		// which both Argo CD's Lua conversion and kstatus's NestedInt64 expect.
		var obj map[string]interface{}
		if err := utiljson.Unmarshal(data, &obj); err != nil {
			return nil, err
		}
		objs = append(objs, expandList(obj)...)
	}
	if len(objs) == 0 {
		return nil, errors.New("no objects found")
	}
	return objs, nil
}

// expandList returns the items of a List (kind List or FooList with items), or the object itself.
func expandList(obj map[string]interface{}) []*unstructured.Unstructured {
	kind, _ := obj["kind"].(string)
	items, isList := obj["items"].([]interface{})
	if !isList || !strings.HasSuffix(kind, "List") {
		return []*unstructured.Unstructured{{Object: obj}}
	}
	var out []*unstructured.Unstructured
	for _, item := range items {
		if m, ok := item.(map[string]interface{}); ok {
			out = append(out, expandList(m)...)
		}
	}
	return out
}

// kstatusHealth is exactly what Flux's health checks and `kpt live status` compute.
func kstatusHealth(u *unstructured.Unstructured) (string, string, error) {
	res, err := status.Compute(u)
	if err != nil {
		return "", "", err
	}
	return res.Status.String(), res.Message, nil
}

// The health codes Argo CD accepts from a script (gitops-engine pkg/health HealthStatusCode).
var argocdHealthCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Healthy": true, "Suspended": true, "Degraded": true, "Missing": true,
}

// argocdHealth runs a resource_customizations health.lua the way Argo CD's controller does
// (argo-cd util/lua/lua.go runLua + ExecuteHealthLua) for a script from argocd-cm, whose useOpenLibs is
// false by default:
//   - a fresh gopher-lua state WITHOUT the standard libraries; only package, base and table are opened,
//     and `require("os")` yields a safe os with time() only. So `string.*`, `math.*` and `s:find(...)` are
//     NOT available: a script that uses them works in a test harness with open libs and fails in Argo CD;
//   - the global `obj` is the object converted value by value (maps to tables, arrays to sequences,
//     numbers to numbers, null to nil);
//   - a one-second execution limit;
//   - the value left on top of the stack must be a table; its `status` must be a known health code
//     (otherwise Argo CD reports Unknown "Lua returned an invalid health status").
func argocdHealth(u *unstructured.Unstructured, script string) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), map[string]lua.LGFunction{
			"time": func(l *lua.LState) int { l.Push(lua.LNumber(time.Now().Unix())); return 1 },
		}))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, u.Object))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret := l.Get(-1)
	tbl, ok := ret.(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("expect table output from Lua script, not %s", ret.Type().String())
	}
	// Argo CD JSON-encodes the table into HealthStatus{status, message string}: a non-string value fails.
	field := func(name string) (string, error) {
		switch v := tbl.RawGetString(name).(type) {
		case *lua.LNilType:
			return "", nil
		case lua.LString:
			return string(v), nil
		default:
			return "", fmt.Errorf("health %s must be a string, got %s", name, v.Type().String())
		}
	}
	st, err := field("status")
	if err != nil {
		return "", "", err
	}
	msg, err := field("message")
	if err != nil {
		return "", "", err
	}
	if !argocdHealthCodes[st] {
		return "Unknown", "Lua returned an invalid health status", nil
	}
	return st, msg, nil
}

// toLua mirrors Argo CD's decodeValue.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(toLua(l, item))
		}
		return arr
	case map[string]interface{}:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), toLua(l, item))
		}
		return tbl
	}
	return lua.LNil
}
