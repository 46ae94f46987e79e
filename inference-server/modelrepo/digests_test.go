package modelrepo

// Digests returns model name → SHA-256 (hex) for the models, the value a proxy puts into the
// enclave's runtime data so that a token names the models this server serves.
func Digests(models []*Model) map[string]string {
	out := make(map[string]string, len(models))
	for _, m := range models {
		out[m.Name] = m.SHA256
	}
	return out
}
