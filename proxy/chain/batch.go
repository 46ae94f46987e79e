package chain

// Protocol v2's group signatures (docs/protocol.md section 10). One ECDSA signature covers a
// batch of statements (chain entries and countersignatures) that one key signs concurrently:
// the signer signs the root of an RFC 9162 Merkle tree over the batch, and each statement
// carries its inclusion proof. A lone statement is a batch of one (an empty path), signed at
// once; under load, statements that arrive while a signature is being computed form the next
// batch (group commit), so batching adds no waiting of its own. A verifier remembers the
// (key, root, signature) triples it has verified, so a batch costs it one ECDSA verification.

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/internal/b64url"
)

// Signing contexts of v2: leaf inputs are context || b64url(payload), and the signature is over
// ctxBatchRoot || b64url(root).
const (
	ctxEntryV2      = "countersign/chain-entry/v2."
	ctxCountersigV2 = "countersign/countersignature/v2."
	ctxBatchRoot    = "countersign/batch-root/v2."
)

// MaxBatch is the largest batch a signer forms and a verifier accepts: an inclusion proof
// holds at most four hashes, so a v2 statement is at most 2 + 4*32 bytes longer than a v1 one.
const MaxBatch = 16

// inclusion is a statement's place in a signed batch: RFC 9162 section 2.1.3's inclusion
// proof of leaf index in a tree of size leaves.
type inclusion struct {
	index, size int
	path        [][32]byte
}

// encode is the proof's wire form: one byte index, one byte size, then the path's hashes.
func (in *inclusion) encode() []byte {
	b := make([]byte, 2, 2+32*len(in.path))
	b[0], b[1] = byte(in.index), byte(in.size)
	for _, h := range in.path {
		b = append(b, h[:]...)
	}
	return b
}

func decodeInclusion(b []byte) (*inclusion, error) {
	if len(b) < 2 || (len(b)-2)%32 != 0 {
		return nil, fmt.Errorf("inclusion proof of %d bytes, expected 2 + 32*k", len(b))
	}
	in := &inclusion{index: int(b[0]), size: int(b[1])}
	if in.size < 1 || in.size > MaxBatch || in.index >= in.size {
		return nil, fmt.Errorf("inclusion proof for leaf %d of %d, expected a batch of 1 to %d", in.index, in.size, MaxBatch)
	}
	for p := b[2:]; len(p) > 0; p = p[32:] {
		in.path = append(in.path, [32]byte(p[:32]))
	}
	if _, err := in.root([32]byte{}); err != nil {
		return nil, err
	}
	return in, nil
}

// leafHash is RFC 9162's hash of a leaf: SHA-256(0x00 || context || payloadB64).
func leafHash(context, payloadB64 string) [32]byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write([]byte(context))
	h.Write([]byte(payloadB64))
	return [32]byte(h.Sum(nil))
}

// nodeHash is RFC 9162's hash of an interior node: SHA-256(0x01 || left || right).
func nodeHash(l, r [32]byte) [32]byte {
	var b [65]byte
	b[0] = 1
	copy(b[1:], l[:])
	copy(b[33:], r[:])
	return sha256.Sum256(b[:])
}

var errPath = errors.New("the inclusion proof's path does not fit its leaf index and batch size")

// root recomputes the tree head from leaf and the proof (RFC 9162 section 2.1.3.2). The path
// must have exactly the length the index and size call for.
func (in *inclusion) root(leaf [32]byte) ([32]byte, error) {
	fn, sn := in.index, in.size-1
	r := leaf
	for _, p := range in.path {
		if sn == 0 {
			return [32]byte{}, errPath
		}
		if fn&1 == 1 || fn == sn {
			r = nodeHash(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = nodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return [32]byte{}, errPath
	}
	return r, nil
}

// treeHead returns the root of leaves and each leaf's inclusion path (RFC 9162 section 2.1.1
// and 2.1.3.1: the left subtree holds the largest power of two smaller than n).
func treeHead(leaves [][32]byte) ([32]byte, [][][32]byte) {
	paths := make([][][32]byte, len(leaves))
	var rec func(lo, hi int) [32]byte
	rec = func(lo, hi int) [32]byte {
		if hi-lo == 1 {
			return leaves[lo]
		}
		k := 1
		for k<<1 < hi-lo {
			k <<= 1
		}
		l, r := rec(lo, lo+k), rec(lo+k, hi)
		for i := lo; i < lo+k; i++ {
			paths[i] = append(paths[i], r)
		}
		for i := lo + k; i < hi; i++ {
			paths[i] = append(paths[i], l)
		}
		return nodeHash(l, r)
	}
	return rec(0, len(leaves)), paths
}

// signRoot signs a tree head: ECDSA P-256 with SHA-256 over ctxBatchRoot || b64url(root), low-s.
func signRoot(key *ecdsa.PrivateKey, root [32]byte) ([]byte, error) {
	return signDigest(key, sha256.Sum256([]byte(ctxBatchRoot+b64.EncodeToString(root[:]))))
}

// signDigest returns the low-s r || s signature of digest h.
func signDigest(key *ecdsa.PrivateKey, h [32]byte) ([]byte, error) {
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		return nil, err
	}
	if s.Cmp(p256HalfN) > 0 { // low-s: (r, n-s) is the same signature's other encoding
		s.Sub(key.Curve.Params().N, s)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig, nil
}

// batcher forms the batches of one key by group commit: the first statement to arrive while
// the key is idle leads, signing every statement queued by then (at most MaxBatch); the
// statements that queue meanwhile are the next batch, led by the first of them.
type batcher struct {
	key   *ecdsa.PrivateKey
	mu    sync.Mutex
	busy  bool
	queue []*pending
	last  time.Time     // when the previous batch began
	full  chan struct{} // closed when the queue is full while the leader holds
}

type pending struct {
	leaf  [32]byte
	done  chan struct{}
	lead  bool // woken to lead the next batch rather than with a result
	sig   []byte
	proof *inclusion
	err   error
}

func (b *batcher) sign(leaf [32]byte) ([]byte, *inclusion, error) {
	me := &pending{leaf: leaf, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, me)
	if b.full != nil && len(b.queue) >= MaxBatch {
		close(b.full)
		b.full = nil
	}
	if b.busy {
		b.mu.Unlock()
		<-me.done
		if !me.lead {
			return me.sig, me.proof, me.err
		}
		b.mu.Lock()
	}
	b.busy = true
	// Under load (the previous batch began less than batchBusy ago and other requests are in
	// flight) the leader waits up to BatchHold for more statements, or until the batch is full;
	// a statement of an idle proxy is signed at once.
	now := time.Now()
	busy := now.Sub(b.last) < batchBusy && inFlight.Load() > 2
	b.last = now
	if hold := BatchHold; hold > 0 && busy && len(b.queue) < MaxBatch {
		full := make(chan struct{})
		b.full = full
		b.mu.Unlock()
		t := time.NewTimer(hold)
		select {
		case <-t.C:
		case <-full:
			t.Stop()
		}
		b.mu.Lock()
		b.full = nil
	}
	n := min(len(b.queue), MaxBatch)
	batch := b.queue[:n:n]
	b.queue = append([]*pending(nil), b.queue[n:]...)
	b.mu.Unlock()

	leaves := make([][32]byte, len(batch))
	for i, p := range batch {
		leaves[i] = p.leaf
	}
	root, paths := treeHead(leaves)
	sig, err := signRoot(b.key, root)
	signStats.statements.Add(uint64(len(batch)))
	signStats.signatures.Add(1)
	for i, p := range batch {
		p.sig, p.err = sig, err
		p.proof = &inclusion{index: i, size: len(batch), path: paths[i]}
		if p != me {
			close(p.done)
		}
	}
	b.mu.Lock()
	if len(b.queue) > 0 {
		next := b.queue[0]
		next.lead = true
		close(next.done)
	} else {
		b.busy = false
	}
	b.mu.Unlock()
	return me.sig, me.proof, me.err
}

// batchers holds one batcher per signing key. Keys change when the identity refreshes; the
// map is bounded by forgetting every other key when it grows past a few (a statement of a
// forgotten key is then signed in a fresh batcher: correct, merely not batched with it).
var batchers struct {
	mu sync.Mutex
	m  map[*ecdsa.PrivateKey]*batcher
}

func batcherFor(key *ecdsa.PrivateKey) *batcher {
	batchers.mu.Lock()
	defer batchers.mu.Unlock()
	if b, ok := batchers.m[key]; ok {
		return b
	}
	if batchers.m == nil || len(batchers.m) >= 8 {
		batchers.m = map[*ecdsa.PrivateKey]*batcher{}
	}
	b := &batcher{key: key}
	batchers.m[key] = b
	return b
}

// verifiedRoots remembers (key, root, signature) triples that verified, so that the other
// statements of a batch cost a verifier hashes only. A hit is a fact about the signature,
// valid forever; the set is bounded (a ring of verifiedRootsMax) only to bound memory.
var verifiedRoots struct {
	mu   sync.Mutex
	m    map[[32]byte]struct{}
	ring [][32]byte
	next int
}

const verifiedRootsMax = 4096

func rootKey(pub *ecdsa.PublicKey, root [32]byte, sig []byte) ([32]byte, bool) {
	pb, err := pub.Bytes()
	if err != nil {
		return [32]byte{}, false
	}
	h := sha256.New()
	h.Write(pb)
	h.Write(root[:])
	h.Write(sig)
	return [32]byte(h.Sum(nil)), true
}

// verifyRoot checks sig over root under pub, from the cache when it verified before.
func verifyRoot(pub *ecdsa.PublicKey, root [32]byte, sig []byte) bool {
	k, ok := rootKey(pub, root, sig)
	if !ok {
		return false
	}
	verifiedRoots.mu.Lock()
	_, hit := verifiedRoots.m[k]
	verifiedRoots.mu.Unlock()
	if hit {
		return true
	}
	if !verifyDigest(pub, sha256.Sum256([]byte(ctxBatchRoot+b64.EncodeToString(root[:]))), sig) {
		return false
	}
	verifiedRoots.mu.Lock()
	defer verifiedRoots.mu.Unlock()
	if verifiedRoots.m == nil {
		verifiedRoots.m = map[[32]byte]struct{}{}
		verifiedRoots.ring = make([][32]byte, verifiedRootsMax)
	}
	if _, dup := verifiedRoots.m[k]; !dup {
		delete(verifiedRoots.m, verifiedRoots.ring[verifiedRoots.next])
		verifiedRoots.ring[verifiedRoots.next] = k
		verifiedRoots.m[k] = struct{}{}
		verifiedRoots.next = (verifiedRoots.next + 1) % verifiedRootsMax
	}
	return true
}

// signed is a parsed statement's signature: v1 (proof nil) or v2.
type signed struct {
	payload string // b64url(P)
	sig     []byte // r || s
	proof   *inclusion
}

// context returns the signing context of the statement's version for kind (ctxEntry or
// ctxCountersig).
func (s *signed) context(kind string) string {
	if s.proof == nil {
		return kind
	}
	if kind == ctxEntry {
		return ctxEntryV2
	}
	return ctxCountersigV2
}

// digest identifies what was signed: v1's signed digest H(context || b64url(P)), v2's leaf
// hash. Duplicate detection and the replay set key on it.
func (s *signed) digest(kind string) [32]byte {
	if s.proof == nil {
		return signedDigest(kind, s.payload)
	}
	return leafHash(s.context(kind), s.payload)
}

// verify checks the statement's signature under pub.
func (s *signed) verify(pub *ecdsa.PublicKey, kind string) bool {
	if s.proof == nil {
		return verifySig(pub, kind, s.payload, s.sig)
	}
	root, err := s.proof.root(s.digest(kind))
	return err == nil && verifyRoot(pub, root, s.sig)
}

// encodeProof is the third part of a v2 statement.
func encodeProof(in *inclusion) string { return b64.EncodeToString(in.encode()) }

func parseProof(s string) (*inclusion, error) {
	b, err := b64url.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("inclusion proof: %v", err)
	}
	return decodeInclusion(b)
}

var signStats struct{ statements, signatures atomic.Uint64 }

// SignStats returns how many v2 statements this process has signed and with how many ECDSA
// signatures (their ratio is the mean batch size).
func SignStats() (statements, signatures uint64) {
	return signStats.statements.Load(), signStats.signatures.Load()
}

// BatchHold is how long a batch's leader waits for more statements before signing when its
// key is under load (0: it signs at once, batching only what queued meanwhile).
var BatchHold = 100 * time.Microsecond

// batchBusy is the gap between batches below which a key counts as under load: at 1000
// statements a second or fewer, no statement waits.
const batchBusy = time.Millisecond

// inFlight counts the requests this process is serving (Begin), so that a lone request is
// never held for a batch.
var inFlight atomic.Int64

// Begin counts a request in flight until end is called; the HTTP proxies call it for every
// request they serve.
func Begin() (end func()) {
	inFlight.Add(1)
	return func() { inFlight.Add(-1) }
}
