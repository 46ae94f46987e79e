package demomodel

import (
	"math"
	"sync"
)

var (
	buildOnce  sync.Once
	buildFiles Files
	buildNet   *Net
	buildErr   error
)

// BuildOnce trains once per test binary; the internal and external tests share it.
func BuildOnce() (Files, *Net, error) {
	buildOnce.Do(func() { buildFiles, buildNet, buildErr = Build() })
	return buildFiles, buildNet, buildErr
}

func expRef(x float64) float64 { return math.Exp(x) }

// Predict returns the class probabilities for one scan.
func (n *Net) Predict(x []float32) []float32 {
	a := newActs()
	n.forward(x, a)
	return append([]float32(nil), a.probs...)
}
