package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

const (
	healthKeyPrefix  = "resource.customizations.health."
	actionsKeyPrefix = "resource.customizations.actions."
)

// resourceActions is the value of an argocd-cm actions key, as Argo CD parses it (ResourceActions).
type resourceActions struct {
	DiscoveryLua        string `json:"discovery.lua"`
	MergeBuiltinActions bool   `json:"mergeBuiltinActions,omitempty"`
	Definitions         []struct {
		Name      string `json:"name"`
		ActionLua string `json:"action.lua"`
	} `json:"definitions"`
}

// checkArgocdCM reads an argocd-cm patch the way Argo CD reads its ConfigMap and checks that it carries
// exactly the scripts of the resource_customizations tree: for each <group>/<Kind>, the health key
// resource.customizations.health.<group>_<Kind> holds health.lua, and the actions key
// resource.customizations.actions.<group>_<Kind> parses (YAML) into discovery.lua and one definition
// per actions/<name>/action.lua with its text. No other key. Returns the problems found.
func checkArgocdCM(patchPath, root string, out io.Writer) int {
	problems := 0
	bad := func(format string, args ...interface{}) {
		problems++
		fmt.Fprintf(out, "FAIL %s: %s\n", patchPath, fmt.Sprintf(format, args...))
	}
	cm, err := readObject(patchPath)
	if err != nil {
		bad("%v", err)
		return problems
	}
	if cm.GetKind() != "ConfigMap" || cm.GetName() != "argocd-cm" {
		bad("is a %s %q, want the ConfigMap argocd-cm", cm.GetKind(), cm.GetName())
	}
	data := map[string]string{}
	if raw, ok := cm.Object["data"].(map[string]interface{}); ok {
		for k, v := range raw {
			s, ok := v.(string)
			if !ok {
				bad("data.%s is not a string", k)
			}
			data[k] = s
		}
	}
	kinds, err := kindDirs(root)
	if err != nil {
		bad("%v", err)
		return problems
	}
	expected := map[string]bool{}
	for _, key := range kinds {
		dir := filepath.Join(root, filepath.FromSlash(key))
		cmKey := strings.Replace(key, "/", "_", 1)
		if health := filepath.Join(dir, "health.lua"); fileExists(health) {
			k := healthKeyPrefix + cmKey
			expected[k] = true
			if want, err := os.ReadFile(health); err != nil {
				bad("%v", err)
			} else if got, ok := data[k]; !ok {
				bad("no %s", k)
			} else if got != string(want) {
				bad("%s differs from %s", k, health)
			}
		}
		if actionsDir := filepath.Join(dir, "actions"); dirExists(actionsDir) {
			k := actionsKeyPrefix + cmKey
			expected[k] = true
			raw, ok := data[k]
			if !ok {
				bad("no %s", k)
				continue
			}
			for _, p := range compareActions(k, raw, actionsDir) {
				bad("%s", p)
			}
		}
	}
	for k := range data {
		if !expected[k] {
			bad("%s matches no script under %s", k, root)
		}
	}
	if problems == 0 {
		fmt.Fprintf(out, "ok   %s carries the scripts of %s (%d keys)\n", patchPath, root, len(expected))
	}
	return problems
}

func compareActions(key, raw, actionsDir string) []string {
	var actions resourceActions
	if err := yaml.UnmarshalStrict([]byte(raw), &actions); err != nil {
		return []string{fmt.Sprintf("%s does not parse as Argo CD resource actions: %v", key, err)}
	}
	var problems []string
	if want, err := os.ReadFile(filepath.Join(actionsDir, "discovery.lua")); err != nil {
		problems = append(problems, err.Error())
	} else if actions.DiscoveryLua != string(want) {
		problems = append(problems, key+": discovery.lua differs from "+filepath.Join(actionsDir, "discovery.lua"))
	}
	defined := actionNames(actionsDir)
	var got []string
	for _, d := range actions.Definitions {
		got = append(got, d.Name)
		path := filepath.Join(actionsDir, d.Name, "action.lua")
		if !defined[d.Name] {
			problems = append(problems, fmt.Sprintf("%s: definition %q has no %s", key, d.Name, path))
			continue
		}
		if want, err := os.ReadFile(path); err != nil {
			problems = append(problems, err.Error())
		} else if d.ActionLua != string(want) {
			problems = append(problems, fmt.Sprintf("%s: %s differs from %s", key, d.Name, path))
		}
	}
	sort.Strings(got)
	if want := sortedKeys(defined); strings.Join(got, ",") != strings.Join(want, ",") {
		problems = append(problems, fmt.Sprintf("%s defines %v, want %v", key, got, want))
	}
	return problems
}
