package chain

import (
	"sync"
	"time"
)

// TTLSet remembers keys until they expire, up to a bound. Expiry is kept as Unix nanoseconds
// (8 bytes, not a 24-byte time.Time): the replay set holds every request of the last two
// windows, so its per-entry size is the proxy's memory at a high request rate.
type TTLSet[K comparable, V any] struct {
	mu  sync.Mutex
	m   map[K]ttlItem[V]
	max int
}

// sweepStep is how many entries each insertion examines for expiry.
const sweepStep = 4

type ttlItem[V any] struct {
	v   V
	exp int64 // Unix nanoseconds
}

// NewTTLSet returns a set holding at most max live keys.
func NewTTLSet[K comparable, V any](max int) *TTLSet[K, V] {
	return &TTLSet[K, V]{m: map[K]ttlItem[V]{}, max: max}
}

// Add stores k until exp. It reports false when k is already present (and unexpired) or the
// set is full of unexpired keys.
func (s *TTLSet[K, V]) Add(k K, v V, exp, now time.Time) (added, full bool) {
	n := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.m[k]; ok && n < it.exp {
		return false, false
	}
	if len(s.m) >= s.max {
		// Full: one whole sweep, then refuse if it freed nothing.
		for key, it := range s.m {
			if n >= it.exp {
				delete(s.m, key)
			}
		}
		if len(s.m) >= s.max {
			return false, true
		}
	} else {
		// Incremental: look at sweepStep entries per insertion (a map's iteration starts at
		// a random place), instead of sweeping the whole set under the lock once a second,
		// which at 10 000 requests/s would stall a request for every entry of two windows.
		// In a steady state at most 1/sweepStep of the entries held are expired ones.
		i := 0
		for key, it := range s.m {
			if n >= it.exp {
				delete(s.m, key)
			}
			if i++; i == sweepStep {
				break
			}
		}
	}
	s.m[k] = ttlItem[V]{v: v, exp: exp.UnixNano()}
	return true, false
}

// Remove forgets k.
func (s *TTLSet[K, V]) Remove(k K) {
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// Len is the number of keys held (expired ones not yet swept included).
func (s *TTLSet[K, V]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Get returns the value stored under k if unexpired.
func (s *TTLSet[K, V]) Get(k K, now time.Time) (V, bool) {
	n := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.m[k]
	if !ok || n >= it.exp {
		var zero V
		return zero, false
	}
	return it.v, true
}
