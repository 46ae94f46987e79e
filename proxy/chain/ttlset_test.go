package chain

import (
	"runtime"
	"testing"
	"time"
)

func TestTTLSet(t *testing.T) {
	now := time.Unix(1700000000, 0)
	s := NewTTLSet[[32]byte, int](2)
	a, b, c := [32]byte{1}, [32]byte{2}, [32]byte{3}
	if added, full := s.Add(a, 1, now.Add(time.Minute), now); !added || full {
		t.Fatal("first add refused")
	}
	if added, _ := s.Add(a, 1, now.Add(time.Minute), now); added {
		t.Fatal("a live key was added twice (a replay would pass)")
	}
	if v, ok := s.Get(a, now.Add(59*time.Second)); !ok || v != 1 {
		t.Fatal("live key not found")
	}
	if _, ok := s.Get(a, now.Add(time.Minute)); ok {
		t.Fatal("expired key found")
	}
	s.Add(b, 2, now.Add(time.Minute), now)
	if added, full := s.Add(c, 3, now.Add(time.Minute), now); added || !full {
		t.Fatal("a full set took another key")
	}
	// Once a's entry expires the sweep makes room.
	if added, _ := s.Add(c, 3, now.Add(3*time.Minute), now.Add(2*time.Minute)); !added {
		t.Fatal("expired keys were not swept")
	}
	if added, _ := s.Add(a, 1, now.Add(4*time.Minute), now.Add(2*time.Minute)); !added {
		t.Fatal("an expired key could not be added again")
	}
}

// The replay set's footprint: every request of the last two windows is in it.
func TestReplaySetFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates")
	}
	const n = 60000 // 1000 requests/s for 2 × the default 30 s window
	now := time.Now()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := NewTTLSet[[32]byte, struct{}](1 << 20)
	for i := range n {
		var k [32]byte
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		s.Add(k, struct{}{}, now.Add(time.Minute), now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per replay entry", per)
	if per > 120 {
		t.Errorf("%.0f bytes per replay entry", per)
	}
	runtime.KeepAlive(s)
}

// TestTTLSetSweepsAsItGoes: expired entries are dropped a few per insertion, so the set stays
// near its live size without a whole sweep (which would hold the lock over every entry).
func TestTTLSetSweepsAsItGoes(t *testing.T) {
	now := time.Unix(1700000000, 0)
	s := NewTTLSet[[32]byte, struct{}](1 << 20)
	const live = 1000 // each entry lives for 1000 insertions
	for i := range 100 * live {
		var k [32]byte
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		at := now.Add(time.Duration(i) * time.Microsecond)
		if added, full := s.Add(k, struct{}{}, at.Add(live*time.Microsecond), at); !added || full {
			t.Fatalf("insertion %d refused (full %v)", i, full)
		}
	}
	// Steady state: expired entries are at most about 1/sweepStep of those held.
	if n := s.Len(); n > live*sweepStep/(sweepStep-1)+live/2 {
		t.Errorf("%d entries held for %d live ones: expired entries are not swept as the set goes", n, live)
	} else {
		t.Logf("%d entries held for %d live ones", n, live)
	}
}
