package attestation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/attestation/attester"
	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/attestation/policy"
	"github.com/countersign/countersign/attestation/quote"
	"github.com/countersign/countersign/internal/testservice"
)

const signer = "5151515151515151515151515151515151515151515151515151515151515151"

func engine(t *testing.T, svc *testservice.Service, allowDebug bool) *policy.Engine {
	t.Helper()
	doc := fmt.Sprintf("issuers: [{url: %q, caFile: %q}]\nidentities:\n  records-api: {mrsigner: [%q], productId: 1, minSvn: 2, allowDebug: %v}\n",
		svc.URL, svc.CAFile, signer, allowDebug)
	p, err := policy.Parse([]byte(doc), "")
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.NewEngine(p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestTrustFlow runs the whole trust core against the real local attestation service: the sim
// attester quotes over runtime data naming a fresh key, the MAA client gets a token from each
// endpoint, and the verifier and policy accept it for that key and no other.
func TestTrustFlow(t *testing.T) {
	svc := testservice.Start(t, nil)
	mrsigner, _ := attester.ParseMeasurement(signer)
	a, err := attester.New(attester.NameSim, attester.Options{SimPlatformKey: svc.PlatformKeyFile,
		SimIdentity: attester.SimIdentity{MRSigner: mrsigner, ProductID: 1, SVN: 3}})
	if err != nil {
		t.Fatal(err)
	}
	httpc, err := maa.NewHTTPClient(svc.CAFile, 0)
	if err != nil {
		t.Fatal(err)
	}
	lenient, strict := engine(t, svc, true), engine(t, svc, false)
	for _, ep := range []maa.Endpoint{maa.EndpointSgxEnclave, maa.EndpointOpenEnclave} {
		t.Run(string(ep), func(t *testing.T) {
			ctx := context.Background()
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			j, _ := maa.NewJWK(&key.PublicKey, "tls")
			rd, _ := (&maa.RuntimeData{Keys: []maa.JWK{j}, Claimed: map[string]string{"image": "sha256:abc"}}).Marshal()
			q, err := a.Quote(ctx, rd)
			if err != nil {
				t.Fatal(err)
			}
			c := &maa.Client{BaseURL: svc.URL, Endpoint: ep, HTTP: httpc}
			tok, err := c.Attest(ctx, q, rd, maa.DataTypeJSON)
			if err != nil {
				t.Fatal(err)
			}
			d, vt := lenient.Check(ctx, tok, []string{"records-api"}, &key.PublicKey)
			if !d.Allowed() {
				t.Fatalf("token from the service rejected: %v", d.Rejection)
			}
			// The key came back under x-ms-runtime.keys, as MAA returns JSON runtime data.
			var rt struct {
				Keys []maa.JWK `json:"keys"`
			}
			if err := json.Unmarshal(vt.Claims.Runtime, &rt); err != nil || len(rt.Keys) != 1 || rt.Keys[0] != j {
				t.Fatalf("x-ms-runtime.keys = %s (%v), want the sent JWK", vt.Claims.Runtime, err)
			}
			if vt.Runtime.Claimed["image"] != "sha256:abc" {
				t.Errorf("claimed labels lost: %v", vt.Runtime.Claimed)
			}
			if vt.Claims.Sim == nil || !*vt.Claims.Sim || !*vt.Claims.SGXIsDebuggable {
				t.Error("a simulated token does not say it is simulated and debuggable")
			}
			if d, _ := lenient.Check(ctx, tok, []string{"records-api"}, &other.PublicKey); d.Allowed() || d.Rejection.Code != attestation.CodeKeyNotBound {
				t.Fatalf("token accepted for a key it does not name: %+v", d)
			}
			if d, _ := strict.Check(ctx, tok, []string{"records-api"}, &key.PublicKey); d.Allowed() || d.Rejection.Code != attestation.CodeDebug {
				t.Fatalf("a production policy accepted a simulated token: %+v", d)
			}
		})
	}
}

// TestServiceRefusesBadEvidence: the client surfaces MAA's error shape.
func TestServiceRefusesBadEvidence(t *testing.T) {
	svc := testservice.Start(t, nil)
	httpc, _ := maa.NewHTTPClient(svc.CAFile, 0)
	c := &maa.Client{BaseURL: svc.URL, HTTP: httpc}
	rd := []byte(`{"keys":[]}`)
	// A platform the service does not trust.
	_, untrusted, _ := ed25519Key()
	r := quote.Report{ReportData: maa.ReportDataFor(rd)}
	_, err := c.Attest(context.Background(), quote.NewSim(&r, untrusted), rd, maa.DataTypeJSON)
	var se *maa.ServiceError
	if !errors.As(err, &se) || se.Status != 400 || se.Code != maa.CodeInvalidQuote {
		t.Fatalf("untrusted platform: %v", err)
	}
	// Runtime data that is not what the quote commits to.
	r = quote.Report{ReportData: maa.ReportDataFor([]byte("other"))}
	_, err = c.Attest(context.Background(), quote.NewSim(&r, svc.Platform), rd, maa.DataTypeJSON)
	if !errors.As(err, &se) || se.Code != maa.CodeInvalidQuote {
		t.Fatalf("runtime data mismatch: %v", err)
	}
}

func ed25519Key() (any, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	return pub, priv, err
}
