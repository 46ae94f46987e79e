// Package benchratio measures several variants of an operation in the same process, one after
// another and interleaved in rounds, and reports each as a ratio to a baseline. Absolute times
// on shared machines are noise; ratios measured in one run are the figures we publish.
package benchratio

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// Variant is one way of doing the operation.
type Variant struct {
	Name string
	Op   func() error
}

// Result is the median time per operation of a variant over the rounds.
type Result struct {
	Name    string
	NsPerOp float64
	Ratio   float64 // NsPerOp / baseline NsPerOp
}

// Measure runs each variant for about perRound, rounds times, interleaved so that machine
// noise hits all variants alike, and returns the median ns/op of each. The first variant is
// the baseline.
func Measure(variants []Variant, rounds int, perRound time.Duration) ([]Result, error) {
	samples := make([][]float64, len(variants))
	for r := 0; r < rounds; r++ {
		for i, v := range variants {
			ns, err := timeOne(v.Op, perRound)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.Name, err)
			}
			samples[i] = append(samples[i], ns)
		}
	}
	out := make([]Result, len(variants))
	for i, v := range variants {
		s := samples[i]
		sort.Float64s(s)
		out[i] = Result{Name: v.Name, NsPerOp: s[len(s)/2]}
	}
	for i := range out {
		out[i].Ratio = out[i].NsPerOp / out[0].NsPerOp
	}
	return out, nil
}

func timeOne(op func() error, d time.Duration) (float64, error) {
	n := 1
	for {
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := op(); err != nil {
				return 0, err
			}
		}
		el := time.Since(start)
		if el >= d || n >= 1<<30 {
			return float64(el.Nanoseconds()) / float64(n), nil
		}
		if el < d/100 {
			n *= 10
		} else {
			n = int(float64(n)*float64(d)/float64(el)) + 1
		}
	}
}

// Print writes a table of results.
func Print(w io.Writer, title string, rs []Result) {
	fmt.Fprintf(w, "%s\n", title)
	for _, r := range rs {
		fmt.Fprintf(w, "  %-32s %12.0f ns/op  %8.3fx\n", r.Name, r.NsPerOp, r.Ratio)
	}
}
