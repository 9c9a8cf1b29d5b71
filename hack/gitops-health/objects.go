package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// argocdKey is the resource_customizations key of an object: group/Kind, or Kind for the core group.
func argocdKey(u *unstructured.Unstructured) string {
	gvk := u.GroupVersionKind()
	if gvk.Group == "" {
		return gvk.Kind
	}
	return gvk.Group + "/" + gvk.Kind
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

// readObject reads a file that must hold exactly one object (a test input or expected output).
func readObject(file string) (*unstructured.Unstructured, error) {
	objs, err := readObjects(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(objs) != 1 {
		return nil, fmt.Errorf("%s: holds %d objects, want one", file, len(objs))
	}
	return objs[0], nil
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

// oneLine keeps the output one line per object: messages (DSS log tails) may hold newlines and tabs.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ", "\t", " ").Replace(s)
}
