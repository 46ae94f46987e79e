package jsonpatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// apply is a minimal RFC 6902 applier for add, remove and replace, used to check Diff.
func apply(t testing.TB, doc []byte, ops []Operation) any {
	t.Helper()
	v, err := decode(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		// Round-trip the value as the API server would see it.
		b, err := json.Marshal(op)
		if err != nil {
			t.Fatal(err)
		}
		var o struct {
			Op    string          `json:"op"`
			Path  string          `json:"path"`
			Value json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(b, &o); err != nil {
			t.Fatal(err)
		}
		var val any
		if o.Op != "remove" {
			if val, err = decode(o.Value); err != nil {
				t.Fatalf("op %s: %v", b, err)
			}
		}
		v, err = applyOne(v, o.Op, o.Path, val)
		if err != nil {
			t.Fatalf("op %s: %v", b, err)
		}
	}
	return v
}

func applyOne(doc any, op, path string, val any) (any, error) {
	if path == "" {
		if op == "remove" {
			return nil, fmt.Errorf("remove of the root")
		}
		return val, nil
	}
	toks := strings.Split(path[1:], "/")
	for i := range toks {
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(toks[i], "~1", "/"), "~0", "~")
	}
	parent := doc
	for _, tk := range toks[:len(toks)-1] {
		switch p := parent.(type) {
		case map[string]any:
			parent = p[tk]
		case []any:
			i, err := strconv.Atoi(tk)
			if err != nil || i >= len(p) {
				return nil, fmt.Errorf("bad index %q", tk)
			}
			parent = p[i]
		default:
			return nil, fmt.Errorf("path %q through a scalar", path)
		}
	}
	last := toks[len(toks)-1]
	switch p := parent.(type) {
	case map[string]any:
		_, exists := p[last]
		switch op {
		case "add":
			p[last] = val
		case "replace":
			if !exists {
				return nil, fmt.Errorf("replace of missing %q", path)
			}
			p[last] = val
		case "remove":
			if !exists {
				return nil, fmt.Errorf("remove of missing %q", path)
			}
			delete(p, last)
		}
	case []any:
		i, err := strconv.Atoi(last)
		if err != nil || i >= len(p) || op != "replace" {
			return nil, fmt.Errorf("unsupported array op %s %q", op, path)
		}
		p[i] = val
	default:
		return nil, fmt.Errorf("path %q into a scalar", path)
	}
	return doc, nil
}

func checkRoundTrip(t testing.TB, a, b string) []Operation {
	t.Helper()
	ops, err := Diff([]byte(a), []byte(b))
	if err != nil {
		t.Fatal(err)
	}
	got := apply(t, []byte(a), ops)
	want, _ := decode([]byte(b))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("apply(a, Diff(a, b)) != b\n a=%s\n b=%s\n ops=%+v\n got=%v", a, b, ops, got)
	}
	return ops
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		ops        int
	}{
		{"equal", `{"a":1,"b":[1,2]}`, `{"b":[1,2],"a":1}`, 0},
		{"add key", `{"a":1}`, `{"a":1,"b":{"c":2}}`, 1},
		{"remove key", `{"a":1,"b":2}`, `{"a":1}`, 1},
		{"replace scalar", `{"a":1}`, `{"a":"1"}`, 1},
		{"escape", `{"m":{"a/b":1,"c~d":1}}`, `{"m":{"a/b":2,"c~d":3,"x/~":4}}`, 3},
		{"array same length", `{"l":[1,{"x":1}]}`, `{"l":[1,{"x":2}]}`, 1},
		{"array grows", `{"l":[1]}`, `{"l":[0,1]}`, 1},
		{"array shrinks", `{"l":[1,2]}`, `{"l":[]}`, 1},
		{"null value", `{"a":1}`, `{"a":null}`, 1},
		{"type change", `{"a":{"b":1}}`, `{"a":[1]}`, 1},
		{"root", `[1]`, `{"a":1}`, 1},
		{"big numbers stay exact", `{"n":12345678901234567890}`, `{"n":12345678901234567891}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ops := checkRoundTrip(t, tc.a, tc.b); len(ops) != tc.ops {
				t.Errorf("%d operations, want %d: %+v", len(ops), tc.ops, ops)
			}
		})
	}
}

func TestDiffRejectsInvalid(t *testing.T) {
	for _, tc := range [][2]string{{`{`, `{}`}, {`{}`, `{} {}`}, {``, `{}`}, {`0`, `0]`}} {
		if _, err := Diff([]byte(tc[0]), []byte(tc[1])); err == nil {
			t.Errorf("Diff(%q, %q): no error", tc[0], tc[1])
		}
	}
}

func TestNullValueIsEncoded(t *testing.T) {
	b, _ := json.Marshal(Operation{Op: "add", Path: "/a", Value: nil})
	if string(b) != `{"op":"add","path":"/a","value":null}` {
		t.Errorf("got %s", b)
	}
	b, _ = json.Marshal(Operation{Op: "remove", Path: "/a"})
	if string(b) != `{"op":"remove","path":"/a"}` {
		t.Errorf("got %s", b)
	}
}

func FuzzDiff(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":[1,2,{"c":null}]}`), []byte(`{"a":2,"b":[1,2,{"c":"x"}],"d/e":true}`))
	f.Add([]byte(`[]`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if _, err := decode(a); err != nil {
			return
		}
		if _, err := decode(b); err != nil {
			return
		}
		checkRoundTrip(t, string(a), string(b))
	})
}

// decode parses one JSON document for the checks (numbers kept exact). json.Valid first:
// a Decoder alone takes "0]" for 0 (More is false before a closing bracket).
func decode(b []byte) (any, error) {
	if !json.Valid(b) {
		return nil, fmt.Errorf("not a single valid JSON value")
	}
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

// TestEncodeMatchesEncodingJSON: Encode writes what json.Marshal of the operations would,
// and the patch it writes is valid JSON that applies.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	ops := checkRoundTrip(t, `{"m":{"a/b":1,"<x>":"&","d":[1,2]},"r":true}`, `{"m":{"a/b":"\u2028<>","c~d":null,"<x>":"&","d":[1,2,3]},"n":{"k":[]}}`)
	want, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	got := Encode(ops)
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("Encode wrote invalid JSON %s: %v", got, err)
	}
	_ = json.Unmarshal(want, &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("Encode: %s\njson.Marshal: %s", got, want)
	}
	if string(Encode(nil)) != "[]" {
		t.Errorf("Encode(nil) = %s, want []", Encode(nil))
	}
}
