package demomodel

import "math"

// A small CNN, written out loop by loop so that training is deterministic: one goroutine, a fixed
// order of every sum, and every float32 product rounded explicitly (float32(a*b)) so the compiler
// cannot fuse it into an FMA, whose rounding differs.
//
//   scan [1×64×64]
//   → Conv 4×(5×5), stride 2, pad 2 → [4×32×32] → ReLU → MaxPool 2×2 → [4×16×16]
//   → Conv 8×(3×3), stride 1, pad 1 → [8×16×16] → ReLU → MaxPool 4×4 → [8×4×4]
//   → Flatten (128) → Gemm → logits [3] → Softmax → probabilities [3]

// The network first normalises its input: (scan − inputMean) × inputScale (ONNX Sub and Mul).
const (
	inputMean  = 0.3
	inputScale = 5
)

const (
	c1, k1, s1, p1 = 4, 5, 2, 2 // conv1: out channels, kernel, stride, pad
	h1             = Size / s1  // 32
	q1             = h1 / 2     // 16 after pool 2
	c2, k2, p2     = 8, 3, 1    // conv2
	pool2          = 4
	q2             = q1 / pool2 // 4
	nFeat          = c2 * q2 * q2
)

// Net holds the parameters, in the layouts ONNX uses (Conv W: [out][in][kh][kw]; Gemm B with
// transB=1: [classes][features]).
type Net struct {
	W1 []float32 // c1*1*k1*k1
	B1 []float32 // c1
	W2 []float32 // c2*c1*k2*k2
	B2 []float32 // c2
	W3 []float32 // classes*nFeat
	B3 []float32 // classes
}

func newNet(r *rng) *Net {
	n := &Net{
		W1: make([]float32, c1*k1*k1),
		B1: make([]float32, c1),
		W2: make([]float32, c2*c1*k2*k2),
		B2: make([]float32, c2),
		W3: make([]float32, len(Classes)*nFeat),
		B3: make([]float32, len(Classes)),
	}
	// He-style uniform initialisation: limit sqrt(6/fanIn), precomputed as constants.
	initU := func(w []float32, limit float32) {
		for i := range w {
			w[i] = r.between(-limit, limit)
		}
	}
	initU(n.W1, 0.4899) // sqrt(6/25)
	initU(n.W2, 0.3536) // sqrt(6/48)
	initU(n.W3, 0.2165) // sqrt(6/128)
	return n
}

// acts keeps the intermediate values of one forward pass for backprop.
type acts struct {
	x      []float32 // normalised input 64×64
	z1     []float32 // conv1 pre-activation 4×32×32
	a1     []float32 // pool1 output 4×16×16
	arg1   []int32   // index into z1 of each pool1 max
	z2     []float32 // conv2 pre-activation 8×16×16
	feat   []float32 // pool2 output 128
	arg2   []int32   // index into z2 of each pool2 max
	logits []float32
	probs  []float32
}

func newActs() *acts {
	return &acts{
		x:      make([]float32, Size*Size),
		z1:     make([]float32, c1*h1*h1),
		a1:     make([]float32, c1*q1*q1),
		arg1:   make([]int32, c1*q1*q1),
		z2:     make([]float32, c2*q1*q1),
		feat:   make([]float32, nFeat),
		arg2:   make([]int32, nFeat),
		logits: make([]float32, len(Classes)),
		probs:  make([]float32, len(Classes)),
	}
}

func relu(v float32) float32 {
	if v > 0 {
		return v
	}
	return 0
}

// forward runs the network on one scan, filling a.
func (n *Net) forward(x []float32, a *acts) {
	for i, v := range x {
		a.x[i] = float32((v - inputMean) * inputScale)
	}
	x = a.x
	for o := range c1 {
		for i := range h1 {
			for j := range h1 {
				s := n.B1[o]
				for ky := range k1 {
					y := i*s1 + ky - p1
					if y < 0 || y >= Size {
						continue
					}
					for kx := range k1 {
						xx := j*s1 + kx - p1
						if xx < 0 || xx >= Size {
							continue
						}
						s += float32(n.W1[(o*k1+ky)*k1+kx] * x[y*Size+xx])
					}
				}
				a.z1[(o*h1+i)*h1+j] = s
			}
		}
	}
	// ReLU then 2×2 max pool (max of ReLU = ReLU of max).
	for o := range c1 {
		for i := range q1 {
			for j := range q1 {
				best := int32((o*h1+2*i)*h1 + 2*j)
				for dy := range 2 {
					for dx := range 2 {
						idx := int32((o*h1+2*i+dy)*h1 + 2*j + dx)
						if a.z1[idx] > a.z1[best] {
							best = idx
						}
					}
				}
				k := (o*q1+i)*q1 + j
				a.arg1[k] = best
				a.a1[k] = relu(a.z1[best])
			}
		}
	}
	for o := range c2 {
		for i := range q1 {
			for j := range q1 {
				s := n.B2[o]
				for c := range c1 {
					for ky := range k2 {
						y := i + ky - p2
						if y < 0 || y >= q1 {
							continue
						}
						for kx := range k2 {
							xx := j + kx - p2
							if xx < 0 || xx >= q1 {
								continue
							}
							s += float32(n.W2[((o*c1+c)*k2+ky)*k2+kx] * a.a1[(c*q1+y)*q1+xx])
						}
					}
				}
				a.z2[(o*q1+i)*q1+j] = s
			}
		}
	}
	for o := range c2 {
		for i := range q2 {
			for j := range q2 {
				best := int32((o*q1+pool2*i)*q1 + pool2*j)
				for dy := range pool2 {
					for dx := range pool2 {
						idx := int32((o*q1+pool2*i+dy)*q1 + pool2*j + dx)
						if a.z2[idx] > a.z2[best] {
							best = idx
						}
					}
				}
				k := (o*q2+i)*q2 + j
				a.arg2[k] = best
				a.feat[k] = relu(a.z2[best])
			}
		}
	}
	for c := range Classes {
		s := n.B3[c]
		for k := range nFeat {
			s += float32(n.W3[c*nFeat+k] * a.feat[k])
		}
		a.logits[c] = s
	}
	softmax(a.logits, a.probs)
}

func softmax(logits, probs []float32) {
	m := logits[0]
	for _, v := range logits[1:] {
		m = max(m, v)
	}
	var sum float64
	for i, v := range logits {
		e := expNeg(float64(v - m))
		probs[i] = float32(e)
		sum += e
	}
	for i := range probs {
		probs[i] = float32(float64(probs[i]) / sum)
	}
}

// expNeg computes e^x for x ≤ 0 with range reduction and a Taylor polynomial, in plain float64
// operations with explicit rounding, so it gives the same bits everywhere (math.Exp may use
// FMA-dependent assembly).
func expNeg(x float64) float64 {
	if x < -80 {
		return 0
	}
	const ln2 = 0.6931471805599453
	k := int(x/ln2 - 0.5) // round towards the nearest integer for negative x
	r := x - float64(float64(k)*ln2)
	// e^r for |r| ≤ ln2/2, Horner form, 12 terms.
	p := 1.0
	for i := 12; i >= 1; i-- {
		p = 1 + float64(float64(r*p)/float64(i))
	}
	// Multiply by 2^k exactly.
	for ; k < 0; k++ {
		p *= 0.5
	}
	return p
}

// grads has the same shape as Net.
type grads = Net

func zeroLike(n *Net) *grads {
	return &Net{
		W1: make([]float32, len(n.W1)),
		B1: make([]float32, len(n.B1)),
		W2: make([]float32, len(n.W2)),
		B2: make([]float32, len(n.B2)),
		W3: make([]float32, len(n.W3)),
		B3: make([]float32, len(n.B3)),
	}
}

func (n *Net) params() [][]float32 { return [][]float32{n.W1, n.B1, n.W2, n.B2, n.W3, n.B3} }

// backward adds the gradient of the cross-entropy loss for one example to g.
func (n *Net) backward(a *acts, label int, g *grads, dFeat, dA1, dZ1 []float32) {
	for c := range Classes {
		d := a.probs[c]
		if c == label {
			d -= 1
		}
		g.B3[c] += d
		for k := range nFeat {
			g.W3[c*nFeat+k] += float32(d * a.feat[k])
		}
	}
	for k := range nFeat {
		var s float32
		for c := range Classes {
			d := a.probs[c]
			if c == label {
				d -= 1
			}
			s += float32(n.W3[c*nFeat+k] * d)
		}
		dFeat[k] = s
	}
	// Through pool2 and ReLU into conv2's output (sparse: only the max positions).
	clear(dA1)
	for k := range nFeat {
		if a.feat[k] <= 0 || dFeat[k] == 0 {
			continue
		}
		idx := int(a.arg2[k])
		d := dFeat[k]
		o := idx / (q1 * q1)
		i := (idx / q1) % q1
		j := idx % q1
		g.B2[o] += d
		for c := range c1 {
			for ky := range k2 {
				y := i + ky - p2
				if y < 0 || y >= q1 {
					continue
				}
				for kx := range k2 {
					xx := j + kx - p2
					if xx < 0 || xx >= q1 {
						continue
					}
					wi := ((o*c1+c)*k2+ky)*k2 + kx
					ai := (c*q1+y)*q1 + xx
					g.W2[wi] += float32(d * a.a1[ai])
					dA1[ai] += float32(d * n.W2[wi])
				}
			}
		}
	}
	// Through pool1 and ReLU into conv1's output.
	clear(dZ1)
	for k, d := range dA1 {
		if d == 0 || a.a1[k] <= 0 {
			continue
		}
		dZ1[a.arg1[k]] += d
	}
	for idx, d := range dZ1 {
		if d == 0 {
			continue
		}
		o := idx / (h1 * h1)
		i := (idx / h1) % h1
		j := idx % h1
		g.B1[o] += d
		for ky := range k1 {
			y := i*s1 + ky - p1
			if y < 0 || y >= Size {
				continue
			}
			for kx := range k1 {
				xx := j*s1 + kx - p1
				if xx < 0 || xx >= Size {
					continue
				}
				g.W1[(o*k1+ky)*k1+kx] += float32(d * a.x[y*Size+xx])
			}
		}
	}
}

// TrainConfig sets the training run.
type TrainConfig struct {
	Seed      uint64
	PerClass  int // training scans per class
	Epochs    int
	BatchSize int
	LR        float32
	Beta1     float32 // Adam
	Beta2     float32
}

// Train trains a network on a synthetic set drawn from cfg.Seed.
func Train(cfg TrainConfig) *Net {
	r := &rng{s: cfg.Seed}
	net := newNet(r)
	images, labels := Dataset(cfg.Seed+1, cfg.PerClass)
	order := make([]int, len(images))
	for i := range order {
		order[i] = i
	}
	a := newActs()
	g := zeroLike(net)
	m1 := zeroLike(net)
	m2 := zeroLike(net)
	b1t, b2t := float32(1), float32(1)
	dFeat := make([]float32, nFeat)
	dA1 := make([]float32, c1*q1*q1)
	dZ1 := make([]float32, c1*h1*h1)
	for epoch := range cfg.Epochs {
		// Fisher–Yates shuffle with the same PRNG.
		for i := len(order) - 1; i > 0; i-- {
			j := r.intn(i + 1)
			order[i], order[j] = order[j], order[i]
		}
		lr := cfg.LR
		if epoch >= cfg.Epochs*2/3 {
			lr = float32(lr * 0.3)
		}
		for start := 0; start < len(order); start += cfg.BatchSize {
			end := min(start+cfg.BatchSize, len(order))
			for _, p := range g.params() {
				clear(p)
			}
			for _, idx := range order[start:end] {
				net.forward(images[idx], a)
				net.backward(a, labels[idx], g, dFeat, dA1, dZ1)
			}
			// Adam. math.Sqrt is correctly rounded everywhere, so this stays deterministic.
			inv := 1 / float32(end-start)
			b1t = float32(b1t * cfg.Beta1)
			b2t = float32(b2t * cfg.Beta2)
			c1t, c2t := 1-b1t, 1-b2t
			gp, mp, vp, np := g.params(), m1.params(), m2.params(), net.params()
			for pi := range np {
				for i := range np[pi] {
					gi := float32(gp[pi][i] * inv)
					mp[pi][i] = float32(cfg.Beta1*mp[pi][i]) + float32((1-cfg.Beta1)*gi)
					vp[pi][i] = float32(cfg.Beta2*vp[pi][i]) + float32(float32(1-cfg.Beta2)*float32(gi*gi))
					mh := mp[pi][i] / c1t
					vh := vp[pi][i] / c2t
					np[pi][i] -= float32(lr*mh) / (float32(math.Sqrt(float64(vh))) + 1e-7)
				}
			}
		}
	}
	return net
}

// Accuracy returns the fraction of correct predictions and the confusion matrix
// (rows: true class, columns: predicted class).
func (n *Net) Accuracy(images [][]float32, labels []int) (float64, [][]int) {
	conf := make([][]int, len(Classes))
	for i := range conf {
		conf[i] = make([]int, len(Classes))
	}
	a := newActs()
	correct := 0
	for i, x := range images {
		n.forward(x, a)
		best := 0
		for c := range a.probs {
			if a.probs[c] > a.probs[best] {
				best = c
			}
		}
		conf[labels[i]][best]++
		if best == labels[i] {
			correct++
		}
	}
	return float64(correct) / float64(len(images)), conf
}
