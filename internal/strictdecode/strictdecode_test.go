package strictdecode

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/fuzzcorpus"
)

type dur time.Duration

func (d *dur) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = dur(v)
	return err
}

type inner struct {
	AllowDebug bool     `json:"allowDebug,omitempty"`
	List       []string `json:"list,omitempty"`
	Timeout    dur      `json:"timeout,omitempty"`
}

type doc struct {
	Name  string           `json:"name"`
	Items map[string]inner `json:"items,omitempty"`
	Ptr   *inner           `json:"ptr,omitempty"`
	Any   any              `json:"any,omitempty"`
}

// TestExactMembers: case variants, duplicates in any case, unknown members and bad values are
// refused with the field path; exact documents decode.
func TestExactMembers(t *testing.T) {
	var d doc
	if err := JSON([]byte(`{"name":"a","items":{"x":{"allowDebug":true,"list":["p"],"timeout":"1s"}},"ptr":null,"any":{"k":[1]}}`), &d); err != nil || !d.Items["x"].AllowDebug {
		t.Fatalf("%v %+v", err, d)
	}
	bad := map[string]string{
		`{"name":"a","Name":"b"}`:                                "Name",
		`{"items":{"x":{"allowDebug":false,"allowdebug":true}}}`: "items.x.allowdebug",
		`{"items":{"x":{"AllowDebug":true}}}`:                    "items.x.AllowDebug",
		`{"items":{"x":{},"X":{}}}`:                              "items.X",
		`{"nmae":"a"}`:                                           "nmae",
		`{"items":{"x":{"list":"p"}}}`:                           "items.x.list",
		`{"items":{"x":{"list":[1]}}}`:                           "items.x.list[0]",
		`{"items":{"x":{"timeout":"soon"}}}`:                     "items.x.timeout",
		`{"ptr":{"allowDebug":"yes"}}`:                           "ptr.allowDebug",
		`{"any":{"k":1,"k":2}}`:                                  "any.k",
		`{"name":"a"} {}`:                                        "after the end",
		`[1]`:                                                    "the document",
	}
	for in, want := range bad {
		var d doc
		if err := JSON([]byte(in), &d); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %s", in, err, want)
		}
	}
	if err := YAML([]byte("name: a\nitems:\n  x: {allowDebug: false, allowdebug: true}\n"), &d); err == nil {
		t.Error("YAML allowDebug twice accepted")
	}
}

// FuzzStrictJSON: never panics; whatever it accepts, encoding/json accepts too and reads the
// same way.
func FuzzStrictJSON(f *testing.F) {
	seeds := [][]any{
		{[]byte(`{"name":"a","items":{"x":{"allowDebug":true}}}`)},
		{[]byte(`{"items":{"x":{"allowDebug":false,"allowdebug":true}}}`)},
		{[]byte(`{"Name":"a"}`)},
		{[]byte(`{"any":{"k":1,"k":2}}`)},
		{[]byte(`{"items":{"x":{"list":[1]}}}`)},
	}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzStrictJSON", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var a doc
		if JSON(b, &a) != nil {
			return
		}
		var c doc
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("strict accepted what encoding/json refuses: %v", err)
		}
		ja, _ := json.Marshal(a)
		jc, _ := json.Marshal(c)
		if string(ja) != string(jc) {
			t.Fatalf("read differently: %s vs %s", ja, jc)
		}
	})
}
