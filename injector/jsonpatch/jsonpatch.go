// Package jsonpatch computes an RFC 6902 JSON patch that turns one JSON document into another.
//
// It is small on purpose (about a hundred lines) rather than a dependency: the webhook only needs
// "diff two JSON documents", and the well-known Go libraries either pull in their own JSON
// stacks (gomodules.xyz/jsonpatch) or only apply patches (evanphx/json-patch). Objects are
// diffed key by key; arrays of equal length element by element; arrays whose length changed are
// replaced whole, which is always correct and keeps the patch easy to read. Values in the patch
// are the modified document's own JSON text, never decoded and re-encoded.
package jsonpatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Operation is one RFC 6902 operation (only add, remove and replace are produced).
type Operation struct {
	Op   string
	Path string
	// Value is the JSON text of the new value (add and replace), taken from the modified
	// document as it was (empty encodes as null); unused for remove.
	Value json.RawMessage
}

// MarshalJSON encodes the operation ("value" present for add and replace, even when null).
func (o Operation) MarshalJSON() ([]byte, error) { return o.appendJSON(nil), nil }

func (o Operation) appendJSON(b []byte) []byte {
	b = append(b, `{"op":`...)
	b = strconv.AppendQuote(b, o.Op) // op names are ASCII letters
	b = append(b, `,"path":`...)
	path, _ := json.Marshal(o.Path) // a string always encodes
	b = append(b, path...)
	if o.Op != "remove" {
		b = append(b, `,"value":`...)
		if len(o.Value) == 0 {
			b = append(b, "null"...)
		} else {
			b = append(b, o.Value...)
		}
	}
	return append(b, '}')
}

// Encode returns the patch document: the JSON array of the operations.
func Encode(ops []Operation) []byte {
	n := 2
	for _, o := range ops {
		n += len(o.Path) + len(o.Value) + 40
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, o := range ops {
		if i > 0 {
			b = append(b, ',')
		}
		b = o.appendJSON(b)
	}
	return append(b, ']')
}

// Diff returns the operations that turn the JSON document a into b. Subtrees whose JSON text
// is identical are not decoded at all (both documents usually come from the same encoder, and
// the webhook's differ in a few fields); elsewhere objects are compared key by key and arrays of
// equal length element by element, values being compared as decoded JSON text.
func Diff(a, b []byte) ([]Operation, error) {
	if err := validate(a); err != nil {
		return nil, fmt.Errorf("original: %w", err)
	}
	if err := validate(b); err != nil {
		return nil, fmt.Errorf("modified: %w", err)
	}
	var ops []Operation
	if err := diff("", bytes.TrimSpace(a), bytes.TrimSpace(b), &ops); err != nil {
		return nil, err
	}
	return ops, nil
}

func validate(b []byte) error {
	if !json.Valid(b) {
		// Decode for encoding/json's description of what is wrong.
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		return errors.New("not a single JSON value")
	}
	return nil
}

// EscapePath escapes one reference token (RFC 6901).
func EscapePath(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func diff(path string, a, b json.RawMessage, ops *[]Operation) error {
	if bytes.Equal(a, b) {
		return nil
	}
	switch {
	case a[0] == '{' && b[0] == '{':
		var ta, tb map[string]json.RawMessage
		if err := json.Unmarshal(a, &ta); err != nil {
			return err
		}
		if err := json.Unmarshal(b, &tb); err != nil {
			return err
		}
		for _, k := range sortedKeys(ta) {
			if _, ok := tb[k]; !ok {
				*ops = append(*ops, Operation{Op: "remove", Path: path + "/" + EscapePath(k)})
			}
		}
		for _, k := range sortedKeys(tb) {
			p := path + "/" + EscapePath(k)
			if va, ok := ta[k]; ok {
				if err := diff(p, va, tb[k], ops); err != nil {
					return err
				}
			} else {
				*ops = append(*ops, Operation{Op: "add", Path: p, Value: tb[k]})
			}
		}
		return nil
	case a[0] == '[' && b[0] == '[':
		var ta, tb []json.RawMessage
		if err := json.Unmarshal(a, &ta); err != nil {
			return err
		}
		if err := json.Unmarshal(b, &tb); err != nil {
			return err
		}
		if len(ta) != len(tb) {
			break
		}
		for i := range ta {
			if err := diff(path+"/"+strconv.Itoa(i), ta[i], tb[i], ops); err != nil {
				return err
			}
		}
		return nil
	case a[0] != '{' && a[0] != '[' && b[0] != '{' && b[0] != '[':
		if equalScalar(a, b) {
			return nil
		}
	}
	*ops = append(*ops, Operation{Op: "replace", Path: path, Value: b})
	return nil
}

// equalScalar compares two JSON scalars by value: strings after unescaping, numbers by
// their text (as json.Number does), literals by text.
func equalScalar(a, b json.RawMessage) bool {
	if a[0] == '"' && b[0] == '"' {
		var sa, sb string
		return json.Unmarshal(a, &sa) == nil && json.Unmarshal(b, &sb) == nil && sa == sb
	}
	return false // different text: different numbers or literals
}

func sortedKeys(m map[string]json.RawMessage) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
