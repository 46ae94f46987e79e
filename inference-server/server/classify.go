package server

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/countersign/countersign/inference-server/oip"
)

// classify turns an output into the classification extension's form: for each row of the last
// dimension, the top k entries as "score:index[:label]" strings, highest score first (ties: lower
// index first). The result is a BYTES tensor of shape [rows..., k].
func classify(t oip.Tensor, k int, labels []string) (oip.Tensor, error) {
	var vals []float64
	switch d := t.Data.(type) {
	case []float32:
		vals = make([]float64, len(d))
		for i, v := range d {
			vals[i] = float64(v)
		}
	case []float64:
		vals = d
	case []int32:
		vals = toF64(d)
	case []int64:
		vals = toF64(d)
	case []int8:
		vals = toF64(d)
	case []uint8:
		vals = toF64(d)
	default:
		return oip.Tensor{}, &oip.Error{Msg: "output " + strconv.Quote(t.Name) + ": classification needs a numeric output"}
	}
	if len(t.Shape) == 0 {
		return oip.Tensor{}, &oip.Error{Msg: "output " + strconv.Quote(t.Name) + ": classification needs at least one dimension"}
	}
	classes := int(t.Shape[len(t.Shape)-1])
	if classes == 0 {
		return oip.Tensor{}, &oip.Error{Msg: "output " + strconv.Quote(t.Name) + ": no classes"}
	}
	k = min(k, classes)
	rows := len(vals) / classes
	out := make([]string, 0, rows*k)
	idx := make([]int, classes)
	for r := range rows {
		row := vals[r*classes : (r+1)*classes]
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(row[b], row[a]) })
		for _, i := range idx[:k] {
			s := strconv.FormatFloat(row[i], 'f', 6, 64) + ":" + strconv.Itoa(i)
			if i < len(labels) {
				s += ":" + labels[i]
			}
			out = append(out, s)
		}
	}
	shape := append(slices.Clone(t.Shape[:len(t.Shape)-1]), int64(k))
	return oip.Tensor{Name: t.Name, Datatype: oip.BYTES, Shape: shape, Data: out}, nil
}

func toF64[T int32 | int64 | int8 | uint8](d []T) []float64 {
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = float64(v)
	}
	return out
}
