package webhook

import (
	"os"
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

// BenchmarkReviewAPIServer reviews an AdmissionReview as kube-apiserver 1.37 sent it in the
// admission-latency run (managedFields, defaults and all).
func BenchmarkReviewAPIServer(b *testing.B) {
	cfg := testConfig()
	body, err := os.ReadFile("testdata/review-apiserver.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if out, res := Review(cfg, body, false); out == nil || res.Reason != "injected" {
			b.Fatal(res)
		}
	}
}
