package token

import (
	"sync"
	"time"
)

type cacheEntry struct {
	verified *Verified
	exp      time.Time
	issuer   *issuer
}

// cache holds verified tokens until they expire. It is keyed by the token itself: the map's
// hash is its digest, and a hit compares the whole token, so a collision can never return
// another token's result. It is bounded: when full, expired entries go first, then arbitrary
// ones.
type cache struct {
	mu  sync.RWMutex
	m   map[string]*cacheEntry
	max int
}

func newCache(max int) *cache { return &cache{m: make(map[string]*cacheEntry), max: max} }

func (c *cache) get(raw string) *cacheEntry {
	c.mu.RLock()
	e := c.m[raw]
	c.mu.RUnlock()
	return e
}

func (c *cache) remove(raw string) {
	c.mu.Lock()
	delete(c.m, raw)
	c.mu.Unlock()
}

func (c *cache) put(raw string, e *cacheEntry, now time.Time, skew time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, old := range c.m {
			if !now.Before(old.exp.Add(skew)) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[raw] = e
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
