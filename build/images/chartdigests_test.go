package images

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// ChartDigests reads the digests the charts pin now, by image name.
func ChartDigests(root string) (map[string]string, error) {
	out := map[string]string{}
	docs := map[string]map[string]any{}
	for _, p := range Pins {
		doc, ok := docs[p.Chart]
		if !ok {
			b, err := os.ReadFile(filepath.Join(root, p.Chart, "values.yaml"))
			if err != nil {
				return nil, err
			}
			if err := yaml.Unmarshal(b, &doc); err != nil {
				return nil, fmt.Errorf("%s/values.yaml: %w", p.Chart, err)
			}
			docs[p.Chart] = doc
		}
		var cur any = doc
		for _, k := range p.Path {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s/values.yaml: %s is not a mapping", p.Chart, k)
			}
			cur = m[k]
		}
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s/values.yaml: no %s", p.Chart, strings.Join(p.Path, "."))
		}
		d, _ := m["digest"].(string)
		out[p.Image] = d
	}
	return out, nil
}
