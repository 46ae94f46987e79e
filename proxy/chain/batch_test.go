package chain

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/attestation"
	"github.com/countersign/countersign/internal/fuzzcorpus"
)

// TestBatchVector is the test vector of docs/protocol.md section 10: three leaves, their
// root, and the proofs of leaves 2 and 0. If this test changes, change the page.
func TestBatchVector(t *testing.T) {
	leaf := func(s string) [32]byte { return sha256.Sum256(append([]byte{0}, s...)) }
	l0, l1, l2 := leaf("a"), leaf("b"), leaf("c")
	n01 := nodeHash(l0, l1)
	root, paths := treeHead([][32]byte{l0, l1, l2})
	if want := nodeHash(n01, l2); root != want {
		t.Fatalf("root %x, want H(0x01 || H(0x01 || L0 || L1) || L2) = %x", root, want)
	}
	p2 := (&inclusion{index: 2, size: 3, path: paths[2]}).encode()
	if want := append([]byte{2, 3}, n01[:]...); !bytes.Equal(p2, want) {
		t.Errorf("proof of leaf 2 = %x, want %x", p2, want)
	}
	p0 := (&inclusion{index: 0, size: 3, path: paths[0]}).encode()
	if want := append(append([]byte{0, 3}, l1[:]...), l2[:]...); !bytes.Equal(p0, want) {
		t.Errorf("proof of leaf 0 = %x, want %x", p0, want)
	}
	// Every leaf of every batch size up to MaxBatch proves the root, and only its own leaf.
	for n := 1; n <= MaxBatch; n++ {
		leaves := make([][32]byte, n)
		for i := range leaves {
			leaves[i] = leaf(strings.Repeat("x", i+1))
		}
		root, paths := treeHead(leaves)
		for i := range leaves {
			in, err := decodeInclusion((&inclusion{index: i, size: n, path: paths[i]}).encode())
			if err != nil {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
			if r, err := in.root(leaves[i]); err != nil || r != root {
				t.Fatalf("n=%d i=%d: root %x, %v; want %x", n, i, r, err, root)
			}
			if r, _ := in.root(leaves[(i+1)%n]); n > 1 && r == root {
				t.Fatalf("n=%d i=%d: another leaf proves the root with this path", n, i)
			}
		}
	}
}

// batchOf signs payloads of kind as one batch with key, exactly as the batcher does.
func batchOf(t *testing.T, key *ecdsa.PrivateKey, kind string, payloads ...any) []string {
	t.Helper()
	var ps []string
	var leaves [][32]byte
	for _, p := range payloads {
		js, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		b := b64.EncodeToString(js)
		ps = append(ps, b)
		leaves = append(leaves, leafHash((&signed{proof: &inclusion{}}).context(kind), b))
	}
	root, paths := treeHead(leaves)
	sig, err := signRoot(key, root)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p + "." + b64.EncodeToString(sig) + "." + encodeProof(&inclusion{index: i, size: len(ps), path: paths[i]})
	}
	return out
}

func codeOf(err error) attestation.Code {
	var rej *attestation.Rejection
	if errors.As(err, &rej) {
		return rej.Code
	}
	return ""
}

// TestBatchAttacksRefused: what v2 brings, attacked. Each statement of a batch verifies for
// its own message only; a root and signature moved onto another statement, an inclusion path
// for another message, malformed proofs and version/encoding mismatches are refused.
func TestBatchAttacksRefused(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok := Digest("answerer-token")
	cs := func(entry string, resp [32]byte) Countersig {
		return Countersig{
			V:     2,
			Entry: entry,
			Token: tok,
			Resp:  b64.EncodeToString(resp[:]),
			TS:    1700000000000,
		}
	}
	// Two countersignatures answering requests on two different connections, one batch.
	entA, entB := Digest("entry on connection A"), Digest("entry on connection B")
	respA, respB := [32]byte{1}, [32]byte{2}
	b := batchOf(t, key, ctxCountersig, cs(entA, respA), cs(entB, respB), cs(Digest("third"), [32]byte{3}))
	if _, err := VerifyCountersig(b[0], entA, tok, &key.PublicKey, respA); err != nil {
		t.Fatalf("statement 0 of the batch: %v", err)
	}
	if _, err := VerifyCountersig(b[1], entB, tok, &key.PublicKey, respB); err != nil {
		t.Fatalf("statement 1 of the batch: %v", err)
	}
	split := func(s string) []string { return strings.Split(s, ".") }
	join := func(p ...string) string { return strings.Join(p, ".") }
	a, bb := split(b[0]), split(b[1])
	// A statement not in the batch, under the batch's root signature and a sibling's proof.
	forged := b64.EncodeToString(mustJSON(t, cs(entA, [32]byte{9})))
	for _, c := range []struct {
		name       string
		enc        string
		entry      string
		resp       [32]byte
		key        *ecdsa.PublicKey
		code       attestation.Code
		detailPart string
	}{
		{"batch mixing two connections: A's statement checked as B's answer", b[0], entB, respB, &key.PublicKey, CodeCountersig, "entry"},
		{"inclusion path for another message", join(a[0], a[1], bb[2]), entA, respA, &key.PublicKey, CodeCountersig, "signature"},
		{"batch root replayed onto a statement not in the batch", join(forged, a[1], a[2]), entA, [32]byte{9}, &key.PublicKey, CodeCountersig, "signature"},
		{"the batch under another key", b[0], entA, respA, &other.PublicKey, CodeCountersig, "signature"},
		{"v2 payload in two parts", join(a[0], a[1]), entA, respA, &key.PublicKey, CodeCountersig, "version 2 in a 2-part"},
		{"proof of size 0", join(a[0], a[1], b64.EncodeToString([]byte{0, 0})), entA, respA, &key.PublicKey, CodeCountersig, "batch of 1 to"},
		{"proof of size 17", join(a[0], a[1], b64.EncodeToString([]byte{0, 17})), entA, respA, &key.PublicKey, CodeCountersig, "batch of 1 to"},
		{"proof index beyond the batch", join(a[0], a[1], b64.EncodeToString([]byte{3, 3})), entA, respA, &key.PublicKey, CodeCountersig, "leaf 3 of 3"},
		{"proof missing a hash", join(a[0], a[1], b64.EncodeToString(mustDecode(t, a[2])[:34])), entA, respA, &key.PublicKey, CodeCountersig, "path does not fit"},
		{"proof with an extra hash", join(a[0], a[1], b64.EncodeToString(append(mustDecode(t, a[2]), make([]byte, 32)...))), entA, respA, &key.PublicKey, CodeCountersig, "path does not fit"},
		{"proof with a trailing byte", join(a[0], a[1], b64.EncodeToString(append(mustDecode(t, a[2]), 0))), entA, respA, &key.PublicKey, CodeCountersig, "2 + 32*k"},
		{"proof in non-canonical base64url", join(a[0], a[1], withSpareBits(split(b[2])[2])), entA, respA, &key.PublicKey, CodeCountersig, "inclusion proof"},
		{"four parts", join(a[0], a[1], a[2], a[2]), entA, respA, &key.PublicKey, CodeCountersig, "expected"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := VerifyCountersig(c.enc, c.entry, tok, c.key, c.resp)
			if codeOf(err) != c.code || !strings.Contains(err.Error(), c.detailPart) {
				t.Errorf("%v, want %s naming %q", err, c.code, c.detailPart)
			}
		})
	}
	// A v1 payload in three parts is refused too (an entry this time).
	e := Entry{
		V:     1,
		Token: tok,
		Req:   b64.EncodeToString(respA[:]),
		TS:    1,
		Nonce: b64.EncodeToString(make([]byte, 16)),
	}
	ent := batchOf(t, key, ctxEntry, e)[0]
	if _, _, _, err := ParseEntry(ent); err == nil || !strings.Contains(err.Error(), "version 1 in a 3-part") {
		t.Errorf("v1 entry in three parts: %v", err)
	}
	// Entries and countersignatures of one batch do not stand in for each other: the leaf
	// contexts differ.
	e.V = 2
	mixed := batchOf(t, key, ctxEntry, e)
	_, st, err := parseEntry(mixed[0])
	if err != nil || !st.verify(&key.PublicKey, ctxEntry) || st.verify(&key.PublicKey, ctxCountersig) {
		t.Errorf("an entry's proof verifies as a countersignature's (or not as its own): %v", err)
	}
}

// TestBatcherGroupsConcurrentStatements drives the real batcher: statements signed together
// under load share signatures (fewer ECDSA signatures than statements), each verifies, and a
// lone statement on an idle proxy is signed at once, alone.
func TestBatcherGroupsConcurrentStatements(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	self := Self{Key: key, Token: "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln"}
	// Idle: one statement, a batch of one, no waiting.
	start := time.Now()
	lone, err := Countersign(self, Digest("lone"), [32]byte{1}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if p := mustDecode(t, strings.Split(lone, ".")[2]); !bytes.Equal(p, []byte{0, 1}) {
		t.Errorf("a lone statement's proof is %x, want 0001 (a batch of one)", p)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("a lone statement took %v", d)
	}
	// Under load: other requests in flight, a long hold so that every goroutine joins.
	end := Begin()
	end2, end3 := Begin(), Begin()
	defer func() { end(); end2(); end3() }()
	old := BatchHold
	BatchHold = 200 * time.Millisecond
	defer func() { BatchHold = old }()
	if _, err := Countersign(self, Digest("warm"), [32]byte{1}, time.Now()); err != nil { // marks the key busy
		t.Fatal(err)
	}
	st0, sg0 := SignStats()
	const n = 8
	var wg sync.WaitGroup
	encs := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			encs[i], _ = Countersign(self, Digest(string(rune('a'+i))), [32]byte{byte(i)}, time.Now())
		}()
	}
	wg.Wait()
	st, sg := SignStats()
	if st-st0 != n || sg-sg0 >= n {
		t.Errorf("%d statements took %d signatures, want fewer than %d", st-st0, sg-sg0, n)
	}
	for i, enc := range encs {
		if _, err := VerifyCountersig(enc, Digest(string(rune('a'+i))), TokenDigest(self.Token), &key.PublicKey, [32]byte{byte(i)}); err != nil {
			t.Errorf("statement %d of the batch: %v", i, err)
		}
	}
}

// TestVersionOneStillSigned: a signer configured for v1 (peers that predate v2) produces the
// two-part encoding of sections 8 and 9, which verifies as before.
func TestVersionOneStillSigned(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	self := Self{Key: key, Token: "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln", Version: 1}
	enc, err := Countersign(self, Digest("e"), [32]byte{1}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyCountersig(enc, Digest("e"), TokenDigest(self.Token), &key.PublicKey, [32]byte{1})
	if err != nil || c.V != 1 || strings.Count(enc, ".") != 1 {
		t.Errorf("v1 countersignature %q: %+v, %v", enc, c, err)
	}
}

// FuzzInclusionProof: decodeInclusion never panics, and what it accepts is in range and
// re-encodes to the same bytes.
func FuzzInclusionProof(f *testing.F) {
	seeds := [][]any{{[]byte{0, 1}}, {append([]byte{2, 3}, make([]byte, 32)...)}, {append([]byte{0, 3}, make([]byte, 64)...)}, {[]byte{0, 0}}, {[]byte{5, 3}}, {[]byte{0, 17}}, {append([]byte{0, 2}, make([]byte, 33)...)}}
	if *fuzzcorpus.Update {
		if err := fuzzcorpus.Write("FuzzInclusionProof", seeds...); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range seeds {
		f.Add(s[0].([]byte))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := decodeInclusion(b)
		if err != nil {
			return
		}
		if in.size < 1 || in.size > MaxBatch || in.index >= in.size || !bytes.Equal(in.encode(), b) {
			t.Fatalf("accepted %x as %+v", b, in)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := b64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
