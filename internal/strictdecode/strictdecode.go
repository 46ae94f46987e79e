// Package strictdecode decodes configuration, policy and annotation documents with exact
// member names. encoding/json matches object keys to struct fields case-insensitively and
// lets a later duplicate win, so `allowDebug: false` followed by `allowdebug: true` decodes as
// true although a reader (or another parser) sees false. Here every object key must be
// exactly a field's name, appear once in any case spelling, and every value must decode into
// its field; errors name the field path, the value and what is expected.
package strictdecode

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// YAML converts a YAML document to JSON (refusing duplicate keys spelled alike) and decodes it
// as JSON does.
func YAML(data []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	return JSON(js, v)
}

// JSON decodes one JSON document into v, a non-nil pointer, strictly (see the package
// comment).
func JSON(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("strictdecode: decode into a non-nil pointer")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := check(dec, rv.Type().Elem(), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the end of the document")
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return describe(err)
	}
	return nil
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func custom(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(jsonUnmarshaler) || p.Implements(textUnmarshaler)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func where(path string) string {
	if path == "" {
		return "the document"
	}
	return "field " + path
}

// check reads one value from dec and checks it against t.
func check(dec *json.Decoder, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if custom(t) {
		return leaf(dec, t, path)
	}
	switch t.Kind() {
	case reflect.Struct:
		fields := fieldsOf(t)
		return object(dec, t, path, func(k string) (reflect.Type, error) {
			if ft, ok := fields[k]; ok {
				return ft, nil
			}
			names := make([]string, 0, len(fields))
			for n := range fields {
				if strings.EqualFold(n, k) {
					return nil, fmt.Errorf("%s: unknown field; member names are case-sensitive, expected %q", where(join(path, k)), n)
				}
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("%s: unknown field, expected one of: %s", where(join(path, k)), strings.Join(names, ", "))
		})
	case reflect.Map:
		return object(dec, t, path, func(string) (reflect.Type, error) { return t.Elem(), nil })
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return leaf(dec, t, path)
		}
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%s: %v", where(path), err)
		}
		if tok == nil {
			return nil
		}
		if tok != json.Delim('[') {
			return mismatch(path, tok, t)
		}
		for i := 0; dec.More(); i++ {
			if err := check(dec, t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	case reflect.Interface:
		return anyValue(dec, path)
	default:
		return leaf(dec, t, path)
	}
}

// object checks a JSON object (or null) whose members' types member gives.
func object(dec *json.Decoder, t reflect.Type, path string, member func(string) (reflect.Type, error)) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %v", where(path), err)
	}
	if tok == nil {
		return nil
	}
	if tok != json.Delim('{') {
		return mismatch(path, tok, t)
	}
	seen := map[string]string{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%s: %v", where(path), err)
		}
		k := kt.(string)
		if first, dup := seen[strings.ToLower(k)]; dup {
			return fmt.Errorf("%s: duplicate member (already given as %q); each member appears once, in any case spelling", where(join(path, k)), first)
		}
		seen[strings.ToLower(k)] = k
		mt, err := member(k)
		if err != nil {
			return err
		}
		if err := check(dec, mt, join(path, k)); err != nil {
			return err
		}
	}
	_, err = dec.Token()
	return err
}

// anyValue checks a value of any shape: objects at any depth have no duplicate members.
func anyValue(dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %v", where(path), err)
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			k := kt.(string)
			if seen[k] {
				return fmt.Errorf("%s: duplicate member", where(join(path, k)))
			}
			seen[k] = true
			if err := anyValue(dec, join(path, k)); err != nil {
				return err
			}
		}
		_, err = dec.Token()
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if err := anyValue(dec, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		_, err = dec.Token()
	}
	return err
}

// leaf decodes one value into a new t, so that a bad value is reported with its field.
func leaf(dec *json.Decoder, t reflect.Type, path string) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("%s: %v", where(path), err)
	}
	if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s: got %s, expected %s", where(path), show(raw), expected(t))
		}
		return fmt.Errorf("%s: got %s: %v", where(path), show(raw), err)
	}
	return nil
}

func mismatch(path string, tok json.Token, t reflect.Type) error {
	var v string
	switch x := tok.(type) {
	case json.Delim:
		v = map[json.Delim]string{'{': "an object", '[': "a list"}[x]
	case string:
		v = show([]byte(strconv.Quote(x)))
	default:
		v = fmt.Sprint(x)
	}
	return fmt.Errorf("%s: got %s, expected %s", where(path), v, expected(t))
}

func show(raw []byte) string {
	s := string(raw)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// expected describes what a value of t must look like.
func expected(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct:
		return "an object"
	case reflect.Map:
		return "an object of " + expected(t.Elem()) + " values"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "a list of " + plural(expected(t.Elem()))
	case reflect.Pointer:
		return expected(t.Elem())
	}
	return t.String()
}

func plural(s string) string {
	for _, a := range []string{"an ", "a "} {
		if strings.HasPrefix(s, a) {
			return strings.TrimPrefix(s, a) + "s"
		}
	}
	return s
}

// fieldsOf maps each JSON member name of struct t to its field's type, as encoding/json names
// them (the tag's name, else the Go name; untagged embedded structs are inlined).
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range fieldsOf(ft) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// describe rewrites the few errors the final decode can still give.
func describe(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: got %s, expected %s", where(te.Field), te.Value, expected(te.Type))
	}
	return err
}
