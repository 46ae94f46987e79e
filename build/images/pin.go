package images

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Pin is where a chart's values.yaml holds an image's digest.
type Pin struct {
	Chart string   // charts/countersign
	Path  []string // image, injector (the mapping holding repository and digest)
	Image string   // the built image's name
}

// Pins are every digest the charts pin. The sgx proxy (image.proxy) is not built here
// (docs/images.md) and the pause image is the cluster runtime's, not a chart's.
var Pins = []Pin{
	{"charts/countersign", []string{"image", "injector"}, "injector"},
	{"charts/countersign", []string{"image", "proxySim"}, "proxy-sim"},
	{"charts/countersign", []string{"image", "proxySimXDS"}, "proxy-sim-xds"},
	{"charts/countersign", []string{"image", "proxyInit"}, "proxy-init"},
	{"charts/healthcare-demo", []string{"attestation", "image"}, "attestation-service"},
	{"charts/healthcare-demo", []string{"records", "image"}, "records"},
	{"charts/healthcare-demo", []string{"inference", "image"}, "inference-server"},
	{"charts/healthcare-demo", []string{"redis", "image"}, "redis"},
}

// keyLine matches "<indent>key:" and captures the indent, key and the rest.
var keyLine = regexp.MustCompile(`^(\s*)([A-Za-z0-9_]+):(.*)$`)

// setValue replaces the scalar at path in a YAML document written in block style, keeping
// every comment and line of the file as it is.
func setValue(doc string, path []string, value string) (string, error) {
	lines := strings.Split(doc, "\n")
	start, end, indent := 0, len(lines), -1
	for depth, key := range path {
		found := -1
		childIndent := -1
		for i := start; i < end; i++ {
			m := keyLine.FindStringSubmatch(lines[i])
			if m == nil {
				continue
			}
			ind := len(m[1])
			if ind <= indent {
				break
			}
			if childIndent == -1 {
				childIndent = ind
			}
			if ind == childIndent && m[2] == key {
				found = i
				break
			}
		}
		if found < 0 {
			return "", fmt.Errorf("no %s in the file", strings.Join(path[:depth+1], "."))
		}
		if depth == len(path)-1 {
			m := keyLine.FindStringSubmatch(lines[found])
			rest := strings.TrimSpace(m[3])
			if rest != "" && !strings.HasPrefix(rest, "#") && !strings.HasPrefix(rest, "\"") && !strings.HasPrefix(rest, "sha256:") {
				return "", fmt.Errorf("%s holds %q, not a digest", strings.Join(path, "."), rest)
			}
			lines[found] = m[1] + m[2] + ": " + value
			return strings.Join(lines, "\n"), nil
		}
		// The block of this key: the following lines indented deeper.
		indent = len(keyLine.FindStringSubmatch(lines[found])[1])
		start = found + 1
		blockEnd := len(lines)
		for i := start; i < len(lines); i++ {
			if m := keyLine.FindStringSubmatch(lines[i]); m != nil && len(m[1]) <= indent {
				blockEnd = i
				break
			}
		}
		end = blockEnd
	}
	return "", fmt.Errorf("empty path")
}

// PinCharts writes the digests of list into the charts' values.yaml files.
func PinCharts(root string, list []Listed) ([]string, error) {
	byName := map[string]Listed{}
	for _, l := range list {
		byName[l.Name] = l
	}
	files := map[string]string{}
	var changed []string
	for _, p := range Pins {
		l, ok := byName[p.Image]
		if !ok {
			return nil, fmt.Errorf("images.tsv has no %s (run make images)", p.Image)
		}
		file := filepath.Join(root, p.Chart, "values.yaml")
		doc, ok := files[file]
		if !ok {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, err
			}
			doc = string(b)
		}
		next, err := setValue(doc, append(append([]string{}, p.Path...), "digest"), l.Digest.String())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if next != doc {
			changed = append(changed, fmt.Sprintf("%s %s.digest = %s", p.Chart, strings.Join(p.Path, "."), l.Digest))
		}
		files[file] = next
	}
	for f, doc := range files {
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			return nil, err
		}
	}
	return changed, nil
}
