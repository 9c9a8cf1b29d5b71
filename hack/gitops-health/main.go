// Command gitops-health computes what GitOps tools make of Kubernetes objects, with the tools' own
// logic, so kube-dss can check its status contract and its Argo CD scripts against them:
//
//	gitops-health kstatus FILE...
//	    kstatus (Flux, kpt, cli-utils): Current / InProgress / Failed / ...
//	gitops-health argocd (--script [GROUP/KIND=]health.lua | --customizations DIR)... FILE...
//	    Argo CD resource_customizations health
//	gitops-health customizations DIR...
//	    the tests of a resource_customizations tree (health_test.yaml, actions/action_test.yaml), run
//	    as argo-cd's util/lua tests run them (see customizations.go)
//	gitops-health argocd-cm PATCH DIR
//	    checks that an argocd-cm patch carries exactly the scripts of the tree DIR (see argocdcm.go)
//
// For kstatus and argocd, each FILE holds JSON or YAML: one object, several YAML documents, or a List
// (as written by `kubectl get dsb -o json` / `-o yaml`). "-" reads stdin. For every object it prints
// one line:
//
//	name<TAB>status<TAB>message
//
// `--script` may be repeated. `--script PATH` applies to every object; `--script GROUP/KIND=PATH` (Argo
// CD's key, e.g. kube-dss.dev/DatasetBuild) only to objects of that kind, as resource_customizations
// does. `--customizations DIR` adds DIR/<group>/<Kind>/health.lua for every kind of the tree. Objects no
// script applies to are skipped with a note on stderr.
//
// The exit code is 0 when everything was evaluated (and every test passed), 1 when something could
// not be (a parse error, a Lua error, a script returning something other than a table) or a test
// failed, 2 on usage errors.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const usage = `usage:
  gitops-health kstatus FILE...
  gitops-health argocd (--script [GROUP/KIND=]HEALTH.lua | --customizations DIR)... FILE...
  gitops-health customizations DIR...
  gitops-health argocd-cm PATCH.yaml DIR

kstatus and argocd print name<TAB>status<TAB>message for every object in the files (JSON or YAML,
one object, several YAML documents or a List; "-" is stdin). customizations runs the health and
action tests of resource_customizations trees; argocd-cm checks a ConfigMap patch against a tree.
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
		scripts, rest, err := healthScripts(files)
		if err != nil {
			fmt.Fprintf(stderr, "gitops-health: %v\n", err)
			return 2
		}
		files = rest
		eval = func(u *unstructured.Unstructured) (string, string, error) {
			script, ok := scripts[argocdKey(u)]
			if !ok {
				if script, ok = scripts[""]; !ok {
					return "", "", errSkip
				}
			}
			hs, err := argocdHealth(u, script)
			return hs.Status, hs.Message, err
		}
	case "customizations":
		if len(files) == 0 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		if runCustomizations(files, stdout) > 0 {
			return 1
		}
		return 0
	case "argocd-cm":
		if len(files) != 2 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		if checkArgocdCM(files[0], files[1], stdout) > 0 {
			return 1
		}
		return 0
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
	return evaluate(files, eval, stdout, stderr)
}

// healthScripts reads the leading --script and --customizations options: Argo CD key (group/Kind, or
// "" for all) -> script. Returns the remaining arguments.
func healthScripts(args []string) (map[string]string, []string, error) {
	scripts := map[string]string{}
	for len(args) >= 2 && (args[0] == "--script" || args[0] == "--customizations") {
		opt, value := args[0], args[1]
		args = args[2:]
		if opt == "--customizations" {
			kinds, err := kindDirs(value)
			if err != nil {
				return nil, nil, err
			}
			for _, key := range kinds {
				path := filepath.Join(value, filepath.FromSlash(key), "health.lua")
				if !fileExists(path) {
					continue
				}
				script, err := os.ReadFile(path)
				if err != nil {
					return nil, nil, err
				}
				scripts[key] = string(script)
			}
			continue
		}
		key, path := "", value
		if k, p, ok := strings.Cut(value, "="); ok {
			key, path = k, p
		}
		script, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		scripts[key] = string(script)
	}
	if len(scripts) == 0 {
		return nil, nil, errors.New("no health script: give --script or --customizations")
	}
	return scripts, args, nil
}

// errSkip marks an object no Argo CD script applies to.
var errSkip = errors.New("no script")

func evaluate(files []string, eval func(*unstructured.Unstructured) (string, string, error), stdout, stderr io.Writer) int {
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
