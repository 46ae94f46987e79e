// Package syncbuf is a bytes.Buffer safe for concurrent use: what tests hand a logger or a
// child process's stderr while they read it.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a concurrency-safe byte buffer; its zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
