// Package modelrepo loads a model repository: one folder per model, each holding the model file
// and a config.json that names its tensors and pins its SHA-256. A model whose bytes do not hash
// to the pinned digest is refused, so the digest the server reports (and the proxy puts into the
// enclave's runtime data) names exactly the bytes that are served.
package modelrepo

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/countersign/countersign/internal/strictdecode"
)

// ConfigFile is the name of a model's config inside its folder.
const ConfigFile = "config.json"

// MaxModelBytes bounds the size of a model file read into memory.
const MaxModelBytes = 1 << 30

// Datatypes of the Open Inference Protocol that a config may name.
var Datatypes = []string{"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"}

// TensorSpec describes one input or output.
type TensorSpec struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"` // -1 marks a variable dimension
	// Labels name the entries of the last dimension (for classification).
	Labels []string `json:"labels,omitempty"`
	// AllowNonFinite accepts NaN and ±Inf in a floating-point input; refused by default.
	AllowNonFinite bool `json:"allow_non_finite,omitempty"`
}

// Config is a model's config.json.
type Config struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Platform string `json:"platform"`
	Model    string `json:"model"`  // file name inside the folder
	SHA256   string `json:"sha256"` // lowercase hex of the model file
	// MaxBatchSize > 0 means dimension 0 of every input and output is the batch dimension (-1 in
	// the shapes) and requests may carry up to this many items; 0 disables batching.
	MaxBatchSize int          `json:"max_batch_size"`
	Inputs       []TensorSpec `json:"inputs"`
	Outputs      []TensorSpec `json:"outputs"`
}

// Model is a loaded, verified model.
type Model struct {
	Config
	Dir   string
	Bytes []byte // the model file, hashed and checked against Config.SHA256
}

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	versionRE = regexp.MustCompile(`^[0-9]{1,9}$`)
)

// ErrDigestMismatch is wrapped by Load when a model file does not match its pinned SHA-256.
var ErrDigestMismatch = errors.New("model SHA-256 does not match config")

// Load reads every model folder under dir (folders without a config.json are skipped) and
// returns the models sorted by name. It fails if any model is invalid: the server serves all of
// the repository or nothing.
func Load(dir string) ([]*Model, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	var models []*Model
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(sub, ConfigFile)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		m, err := LoadModel(sub)
		if err != nil {
			return nil, err
		}
		if m.Name != e.Name() {
			return nil, fmt.Errorf("model repository: folder %q holds model %q; they must match", e.Name(), m.Name)
		}
		models = append(models, m)
	}
	if len(models) == 0 {
		return nil, fmt.Errorf("model repository %s: no model folders with a %s", dir, ConfigFile)
	}
	slices.SortFunc(models, func(a, b *Model) int { return strings.Compare(a.Name, b.Name) })
	return models, nil
}

// LoadModel reads and verifies one model folder.
func LoadModel(dir string) (*Model, error) {
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", dir, err)
	}
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("model %s: %s: %w", dir, ConfigFile, err)
	}
	path := filepath.Join(dir, cfg.Model)
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", cfg.Name, err)
	}
	if st.Size() > MaxModelBytes {
		return nil, fmt.Errorf("model %s: %s is %d bytes, over the %d limit", cfg.Name, cfg.Model, st.Size(), MaxModelBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", cfg.Name, err)
	}
	if got := Digest(b); got != cfg.SHA256 {
		return nil, fmt.Errorf("model %s: %s has SHA-256 %s, config pins %s: %w", cfg.Name, cfg.Model, got, cfg.SHA256, ErrDigestMismatch)
	}
	return &Model{Config: *cfg, Dir: dir, Bytes: b}, nil
}

// Digest returns the lowercase hex SHA-256 of a model file's bytes.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ParseConfig decodes and validates a config.json. Member names are exact: unknown fields,
// members in another case and duplicates are errors (internal/strictdecode).
func ParseConfig(raw []byte) (*Config, error) {
	var c Config
	if err := strictdecode.JSON(raw, &c); err != nil {
		return nil, err
	}
	if c.Version == "" {
		c.Version = "1"
	}
	if c.Platform == "" {
		c.Platform = "onnxruntime_onnx"
	}
	if c.Model == "" {
		c.Model = "model.onnx"
	}
	return &c, c.Validate()
}

// Validate checks a config; errors name the field.
func (c *Config) Validate() error {
	var errs []error
	if !nameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("name %q: want 1-128 of [A-Za-z0-9._-], starting alphanumeric", c.Name))
	}
	if !versionRE.MatchString(c.Version) {
		errs = append(errs, fmt.Errorf("version %q: want a decimal number", c.Version))
	}
	if c.Model != filepath.Base(c.Model) || c.Model == "." || c.Model == ".." {
		errs = append(errs, fmt.Errorf("model %q: want a file name inside the model folder", c.Model))
	}
	if !sha256RE.MatchString(c.SHA256) {
		errs = append(errs, fmt.Errorf("sha256 %q: want 64 lowercase hex digits", c.SHA256))
	}
	if c.MaxBatchSize < 0 || c.MaxBatchSize > 1<<16 {
		errs = append(errs, fmt.Errorf("max_batch_size %d: want 0..65536", c.MaxBatchSize))
	}
	if len(c.Inputs) == 0 || len(c.Inputs) > 64 {
		errs = append(errs, fmt.Errorf("inputs: want 1..64 tensors, have %d", len(c.Inputs)))
	}
	if len(c.Outputs) == 0 || len(c.Outputs) > 64 {
		errs = append(errs, fmt.Errorf("outputs: want 1..64 tensors, have %d", len(c.Outputs)))
	}
	seen := map[string]bool{}
	check := func(kind string, i int, t TensorSpec) {
		where := fmt.Sprintf("%s[%d]", kind, i)
		if t.Name == "" || len(t.Name) > 256 {
			errs = append(errs, fmt.Errorf("%s.name: want 1-256 characters", where))
		}
		if seen[kind+"/"+t.Name] {
			errs = append(errs, fmt.Errorf("%s.name %q: duplicate", where, t.Name))
		}
		seen[kind+"/"+t.Name] = true
		if !slices.Contains(Datatypes, t.Datatype) {
			errs = append(errs, fmt.Errorf("%s.datatype %q: want one of %s", where, t.Datatype, strings.Join(Datatypes, ", ")))
		}
		if len(t.Shape) == 0 || len(t.Shape) > 8 {
			errs = append(errs, fmt.Errorf("%s.shape: want 1..8 dimensions", where))
		}
		for j, d := range t.Shape {
			if d < -1 || d == 0 || d > 1<<24 {
				errs = append(errs, fmt.Errorf("%s.shape[%d] = %d: want -1 or 1..16777216", where, j, d))
			}
		}
		if c.MaxBatchSize > 0 && len(t.Shape) > 0 && t.Shape[0] != -1 {
			errs = append(errs, fmt.Errorf("%s.shape[0] = %d: must be -1 (the batch dimension) when max_batch_size > 0", where, t.Shape[0]))
		}
		if len(t.Labels) > 0 && len(t.Shape) > 0 && t.Shape[len(t.Shape)-1] != int64(len(t.Labels)) {
			errs = append(errs, fmt.Errorf("%s.labels: %d labels for a last dimension of %d", where, len(t.Labels), t.Shape[len(t.Shape)-1]))
		}
	}
	for i, t := range c.Inputs {
		check("inputs", i, t)
	}
	for i, t := range c.Outputs {
		check("outputs", i, t)
	}
	return errors.Join(errs...)
}
