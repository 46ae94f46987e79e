package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation/maa"
	"github.com/countersign/countersign/internal/benchratio"
	"github.com/countersign/countersign/internal/testmaa"
)

// realisticToken is a token shaped like an MAA SGX token from the local attestation service:
// the full claim set, the deprecated aliases and a runtime key.
func realisticToken(b testing.TB, is *testmaa.Issuer, now time.Time) string {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	j, _ := maa.NewJWK(&k.PublicKey, "tls")
	c := is.Claims(now, j)
	c["x-ms-sgx-ehd"] = strings.Repeat("A", 200)
	c["x-ms-sgx-report-data"] = strings.Repeat("0", 128)
	c["x-ms-sgx-collateral"] = map[string]string{
		"qeidcertshash":    strings.Repeat("a", 64),
		"qeidcrlhash":      strings.Repeat("b", 64),
		"qeidhash":         strings.Repeat("c", 64),
		"quotehash":        strings.Repeat("d", 64),
		"tcbinfocertshash": strings.Repeat("e", 64),
		"tcbinfocrlhash":   strings.Repeat("f", 64),
		"tcbinfohash":      strings.Repeat("0", 64),
	}
	for _, alias := range []string{"sgx-mrsigner", "sgx-mrenclave", "maa-ehd", "aas-ehd"} {
		c[alias] = strings.Repeat("1", 64)
	}
	c["is-debuggable"], c["product-id"], c["svn"], c["tee"] = false, 1, 3, "sgx"
	return is.Sign(is.Header(), c)
}

// BenchmarkVerify reports warm-cache and cold verification against a bare
// rsa.VerifyPKCS1v15 of the same token, measured in the same run, as ratios:
//
//	go test -run '^$' -bench BenchmarkVerify ./attestation/token
//
// Targets: warm ≤ 1 µs; cold ≤ 1.3× the bare RSA verify.
func BenchmarkVerify(b *testing.B) {
	is := testmaa.New(b)
	clk := &clock{t: time.Now()}
	v := newVerifier(b, is, clk, nil)
	tok := realisticToken(b, is, clk.now())
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	signing := tok[:strings.LastIndexByte(tok, '.')]
	sig, _ := base64.RawURLEncoding.DecodeString(tok[len(signing)+1:])
	pub := &is.Key.PublicKey

	rs, err := benchratio.Measure([]benchratio.Variant{
		{Name: "bare rsa.VerifyPKCS1v15", Op: func() error {
			h := sha256.Sum256([]byte(signing))
			return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig)
		}},
		{Name: "cold Verify (keys cached)", Op: func() error {
			v.cache.remove(tok)
			_, err := v.Verify(ctx, tok)
			return err
		}},
		{Name: "warm Verify (token cached)", Op: func() error {
			_, err := v.Verify(ctx, tok)
			return err
		}},
	}, 5, 200*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	benchratio.Print(os.Stdout, fmt.Sprintf("token verify, %d-byte MAA-shaped token, RSA-2048 (targets: cold <= 1.30x bare, warm <= 1000 ns):", len(tok)), rs)
	b.ReportMetric(rs[1].Ratio, "cold/bare")
	b.ReportMetric(rs[2].NsPerOp, "warm-ns")
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
