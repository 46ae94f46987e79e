package demomodel

import "math"

func expRef(x float64) float64 { return math.Exp(x) }
