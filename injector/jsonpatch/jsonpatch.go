// Package jsonpatch computes an RFC 6902 JSON patch that turns one JSON document into another.
//
// It is small on purpose (about a hundred lines) rather than a dependency: the webhook only needs
// "diff two JSON documents", and the well-known Go libraries either pull in their own JSON
// stacks (gomodules.xyz/jsonpatch) or only apply patches (evanphx/json-patch). Objects are
// diffed key by key; arrays of equal length element by element; arrays whose length changed are
// replaced whole, which is always correct and keeps the patch easy to read.
package jsonpatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Operation is one RFC 6902 operation (only add, remove and replace are produced).
type Operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// MarshalJSON keeps "value": null for add and replace of a null.
func (o Operation) MarshalJSON() ([]byte, error) {
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value *any   `json:"value,omitempty"`
	}
	x := op{Op: o.Op, Path: o.Path}
	if o.Op != "remove" {
		x.Value = &o.Value
	}
	return json.Marshal(x)
}

// Diff returns the operations that turn the JSON document a into b.
func Diff(a, b []byte) ([]Operation, error) {
	va, err := decode(a)
	if err != nil {
		return nil, fmt.Errorf("original: %w", err)
	}
	vb, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("modified: %w", err)
	}
	var ops []Operation
	diff("", va, vb, &ops)
	return ops, nil
}

func decode(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("trailing data after the JSON value")
	}
	return v, nil
}

// EscapePath escapes one reference token (RFC 6901).
func EscapePath(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func diff(path string, a, b any, ops *[]Operation) {
	switch ta := a.(type) {
	case map[string]any:
		tb, ok := b.(map[string]any)
		if !ok {
			break
		}
		ka := sortedKeys(ta)
		for _, k := range ka {
			if _, ok := tb[k]; !ok {
				*ops = append(*ops, Operation{Op: "remove", Path: path + "/" + EscapePath(k)})
			}
		}
		for _, k := range sortedKeys(tb) {
			p := path + "/" + EscapePath(k)
			if va, ok := ta[k]; ok {
				diff(p, va, tb[k], ops)
			} else {
				*ops = append(*ops, Operation{Op: "add", Path: p, Value: tb[k]})
			}
		}
		return
	case []any:
		tb, ok := b.([]any)
		if !ok || len(ta) != len(tb) {
			break
		}
		for i := range ta {
			diff(fmt.Sprintf("%s/%d", path, i), ta[i], tb[i], ops)
		}
		return
	default:
		if equalScalar(a, b) {
			return
		}
	}
	*ops = append(*ops, Operation{Op: "replace", Path: path, Value: b})
}

func equalScalar(a, b any) bool {
	switch a.(type) {
	case map[string]any, []any:
		return false
	}
	switch b.(type) {
	case map[string]any, []any:
		return false
	}
	return a == b
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
