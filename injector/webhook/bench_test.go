package webhook

import (
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

// BenchmarkReview is the injector's own work per opted-in pod (decode, inject, diff, encode).
func BenchmarkReview(b *testing.B) {
	cfg := testConfig()
	body := review(admissionv1.Create, podJSON(optIn, goodAnn))
	b.ReportAllocs()
	for b.Loop() {
		if out, res := Review(cfg, body, false); out == nil || res.Reason != "injected" {
			b.Fatal(res)
		}
	}
}
