package oip

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestIntegerDatatypes: every INT and UINT datatype decodes to its Go type, accepts its own
// range to the end and refuses one past either end, refuses fractions and more elements than
// the shape, and flattens nesting.
func TestIntegerDatatypes(t *testing.T) {
	cases := []struct {
		datatype  string
		min, max  string // the range's ends
		below     string // one past min
		above     string // one past max
		wantMinMx any
	}{
		{INT8, "-128", "127", "-129", "128", []int8{-128, 127}},
		{INT16, "-32768", "32767", "-32769", "32768", []int16{-32768, 32767}},
		{INT32, "-2147483648", "2147483647", "-2147483649", "2147483648", []int32{-2147483648, 2147483647}},
		{INT64, "-9223372036854775808", "9223372036854775807", "-9223372036854775809", "9223372036854775808", []int64{-9223372036854775808, 9223372036854775807}},
		{UINT8, "0", "255", "-1", "256", []uint8{0, 255}},
		{UINT16, "0", "65535", "-1", "65536", []uint16{0, 65535}},
		{UINT32, "0", "4294967295", "-1", "4294967296", []uint32{0, 4294967295}},
		{UINT64, "0", "18446744073709551615", "-1", "18446744073709551616", []uint64{0, 18446744073709551615}},
	}
	body := func(datatype, shape, data string) []byte {
		return []byte(fmt.Sprintf(`{"inputs":[{"name":"x","datatype":%q,"shape":%s,"data":%s}]}`, datatype, shape, data))
	}
	for _, c := range cases {
		t.Run(c.datatype, func(t *testing.T) {
			r, err := DecodeInferRequest(body(c.datatype, "[2]", "["+c.min+","+c.max+"]"), DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Inputs[0].Data; !reflect.DeepEqual(got, c.wantMinMx) {
				t.Errorf("data %#v, want %#v", got, c.wantMinMx)
			}
			r, err = DecodeInferRequest(body(c.datatype, "[2,1]", "[["+c.max+"],["+c.min+"]]"), DefaultLimits)
			if err != nil {
				t.Fatalf("nested: %v", err)
			}
			if got := reflect.ValueOf(r.Inputs[0].Data); got.Len() != 2 || got.Index(0).Interface() == got.Index(1).Interface() {
				t.Errorf("nested: data %#v", r.Inputs[0].Data)
			}
			for what, data := range map[string]string{
				"below":    "[" + c.below + "]",
				"above":    "[" + c.above + "]",
				"fraction": "[1.5]",
				"exponent": "[1e2]",
				"string":   `["1"]`,
			} {
				_, err := DecodeInferRequest(body(c.datatype, "[1]", data), DefaultLimits)
				if err == nil {
					t.Errorf("%s %s accepted", what, data)
				} else if (what == "below" || what == "above") && !strings.Contains(err.Error(), "is not a valid "+c.datatype) {
					t.Errorf("%s: error %q does not say it is not a valid %s", what, err, c.datatype)
				}
			}
			if _, err := DecodeInferRequest(body(c.datatype, "[1]", "[1,2]"), DefaultLimits); err == nil || !strings.Contains(err.Error(), "more elements than the shape's 1") {
				t.Errorf("too many elements: %v", err)
			}
		})
	}
}
