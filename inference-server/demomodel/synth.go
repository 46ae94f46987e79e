package demomodel

// Synthetic single-channel 64×64 "chest scans". Everything here uses integer PRNG output and
// polynomial arithmetic only (no math.Exp/Sin/Log, whose last bits may differ by architecture
// or CPU features), and every float32 product is rounded explicitly before it is added, so the
// images are the same bits on every machine.

// Size is the side of a scan in pixels.
const Size = 64

// Classes of the demo model, in output order.
var Classes = []string{"normal", "opacity", "nodule"}

// rng is SplitMix64: tiny, well-defined and stable across Go releases.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9E3779B97F4A7C15
	z := r.s
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// unit returns a float32 uniformly in [0, 1) with 24 random bits.
func (r *rng) unit() float32 { return float32(r.next()>>40) / (1 << 24) }

// between returns a float32 uniformly in [lo, hi).
func (r *rng) between(lo, hi float32) float32 { return lo + float32((hi-lo)*r.unit()) }

// intn returns an int in [0, n).
func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

// noise returns an approximately normal value with mean 0 and standard deviation 1
// (Irwin–Hall: the sum of 12 uniforms minus 6).
func (r *rng) noise() float32 {
	var s float32
	for range 12 {
		s += r.unit()
	}
	return s - 6
}

// ellipse returns how far (x, y) is inside an ellipse: 1 at the centre, 0 at the edge, < 0 outside.
func ellipse(x, y, cx, cy, rx, ry float32) float32 {
	dx := (x - cx) / rx
	dy := (y - cy) / ry
	return 1 - float32(dx*dx) - float32(dy*dy)
}

// smooth maps t in [0, 1] to a smooth step (3t² − 2t³), clamping outside.
func smooth(t float32) float32 {
	if t <= 0 {
		return 0
	}
	if t >= 1 {
		return 1
	}
	return float32(t*t) * (3 - float32(2*t))
}

// Scan draws one synthetic scan of the given class; pixels are in [0, 1] and quantised to 8 bits
// (k/255) so that a PNG of the scan decodes to exactly the same input.
func Scan(r *rng, class int) []float32 {
	img := make([]float32, Size*Size)
	// Patient and acquisition variation.
	torsoRX := r.between(26, 31)
	torsoRY := r.between(28, 33)
	cx := r.between(30, 34)
	cy := r.between(31, 35)
	lungRX := r.between(9, 12)
	lungRY := r.between(17, 22)
	gap := r.between(11, 14)
	tissue := r.between(0.5, 0.62)
	air := r.between(0.12, 0.22)
	ribPhase := r.between(0, 7)
	gain := r.between(0.9, 1.1)

	type blob struct{ x, y, r, amp float32 }
	var blobs []blob
	switch class {
	case 1: // opacity: one or two large, soft, bright blobs inside a lung
		n := 1 + r.intn(2)
		for range n {
			side := float32(1)
			if r.intn(2) == 0 {
				side = -1
			}
			blobs = append(blobs, blob{
				x: cx + side*gap + r.between(-4, 4), y: cy + r.between(-10, 10),
				r: r.between(6, 10), amp: r.between(0.22, 0.4),
			})
		}
	case 2: // nodule: one to three small, sharp, round spots
		n := 1 + r.intn(3)
		for range n {
			side := float32(1)
			if r.intn(2) == 0 {
				side = -1
			}
			blobs = append(blobs, blob{
				x: cx + side*gap + r.between(-5, 5), y: cy + r.between(-13, 13),
				r: r.between(1.6, 3), amp: r.between(0.3, 0.5),
			})
		}
	}

	for y := range Size {
		for x := range Size {
			fx, fy := float32(x)+0.5, float32(y)+0.5
			v := float32(0.04)
			if t := ellipse(fx, fy, cx, cy, torsoRX, torsoRY); t > 0 {
				v = 0.04 + float32((tissue-0.04)*smooth(t*6))
			}
			// Heart shadow between the lungs, lower half.
			if t := ellipse(fx, fy, cx+2, cy+9, 8, 10); t > 0 {
				v += float32(0.08 * smooth(t*3))
			}
			for _, side := range []float32{-1, 1} {
				t := ellipse(fx, fy, cx+side*gap, cy, lungRX, lungRY)
				if t <= 0 {
					continue
				}
				lung := smooth(t * 4)
				v = v - float32(lung*(v-air))
				// Ribs: a triangle wave over y, curved with x.
				dx := fx - cx
				u := (fy + ribPhase + float32(0.015*float32(dx*dx))) / 7
				frac := u - float32(int(u))
				tri := 1 - 2*abs(frac-0.5)
				v += float32(0.07 * float32(lung*smooth((tri-0.55)*4)))
			}
			for _, b := range blobs {
				dx, dy := fx-b.x, fy-b.y
				d2 := (float32(dx*dx) + float32(dy*dy)) / float32(b.r*b.r)
				if d2 >= 1 {
					continue
				}
				if class == 2 {
					// Sharp edge: flat top, one-pixel soft rim.
					v += float32(b.amp * smooth((1-d2)*float32(b.r)))
				} else {
					w := 1 - d2
					v += float32(b.amp * float32(w*w))
				}
			}
			v = float32(v*gain) + float32(0.025*r.noise())
			img[y*Size+x] = quantise(v)
		}
	}
	return img
}

func abs(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// quantise clamps to [0, 1] and rounds to the nearest k/255.
func quantise(v float32) float32 {
	if v < 0 {
		v = 0
	}
	if v > 1 {
		v = 1
	}
	return float32(int(float32(v*255)+0.5)) / 255
}

// Dataset draws n scans per class, interleaved by class, from the given seed.
func Dataset(seed uint64, perClass int) (images [][]float32, labels []int) {
	r := &rng{s: seed}
	for range perClass {
		for c := range Classes {
			images = append(images, Scan(r, c))
			labels = append(labels, c)
		}
	}
	return images, labels
}
