// Package scan turns an uploaded image (PNG, or raw 8-bit greyscale) into the demo model's
// input tensor: FP32 [1, 1, Size, Size], pixel values in [0, 1].
package scan

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"image/png"
)

// Size is the model's input side in pixels.
const Size = 64

// Limits on what is decoded.
const (
	MaxSide   = 4096
	MaxPixels = 4096 * 4096
)

// Formats.
const (
	FormatPNG = "png"
	FormatRaw = "raw"
)

// ErrInvalid wraps every rejection of an upload (the API answers 422).
var ErrInvalid = errors.New("invalid scan")

// Image is a decoded scan.
type Image struct {
	Format        string
	Width, Height int
	// Tensor is Size*Size values in [0, 1], row-major.
	Tensor []float32
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// DecodePNG decodes a PNG (any colour model is converted to grey) and resamples it to Size×Size.
func DecodePNG(b []byte) (*Image, error) {
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, invalid("not a PNG image: %v", err)
	}
	if err := checkSize(cfg.Width, cfg.Height); err != nil {
		return nil, err
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, invalid("PNG: %v", err)
	}
	bounds := img.Bounds()
	w, h := bounds.Dx(), bounds.Dy()
	grey := make([]uint8, w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			grey[y*w+x] = color.GrayModel.Convert(img.At(bounds.Min.X+x, bounds.Min.Y+y)).(color.Gray).Y
		}
	}
	return &Image{Format: FormatPNG, Width: w, Height: h, Tensor: resample(grey, w, h)}, nil
}

// DecodeRaw takes width×height bytes of 8-bit greyscale, row-major.
func DecodeRaw(b []byte, width, height int) (*Image, error) {
	if err := checkSize(width, height); err != nil {
		return nil, err
	}
	if len(b) != width*height {
		return nil, invalid("raw greyscale of %dx%d needs %d bytes, got %d", width, height, width*height, len(b))
	}
	return &Image{Format: FormatRaw, Width: width, Height: height, Tensor: resample(b, width, height)}, nil
}

func checkSize(w, h int) error {
	if w < 1 || h < 1 {
		return invalid("image is %dx%d, expected at least 1x1", w, h)
	}
	if w > MaxSide || h > MaxSide || w*h > MaxPixels {
		return invalid("image is %dx%d, at most %dx%d accepted", w, h, MaxSide, MaxSide)
	}
	return nil
}

// resample scales grey (w×h) to Size×Size by averaging the source pixels each target pixel
// covers (nearest source pixel when enlarging), and maps 0..255 to 0..1.
func resample(grey []uint8, w, h int) []float32 {
	out := make([]float32, Size*Size)
	if w == Size && h == Size {
		for i, v := range grey {
			out[i] = float32(v) / 255
		}
		return out
	}
	for ty := 0; ty < Size; ty++ {
		y0, y1 := ty*h/Size, (ty+1)*h/Size
		if y1 <= y0 {
			y1 = y0 + 1
		}
		for tx := 0; tx < Size; tx++ {
			x0, x1 := tx*w/Size, (tx+1)*w/Size
			if x1 <= x0 {
				x1 = x0 + 1
			}
			var sum, n int
			for y := y0; y < y1; y++ {
				for x := x0; x < x1; x++ {
					sum += int(grey[y*w+x])
					n++
				}
			}
			out[ty*Size+tx] = float32(sum) / float32(n) / 255
		}
	}
	return out
}
