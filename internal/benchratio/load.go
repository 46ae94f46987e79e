package benchratio

import (
	"bufio"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ProcCPU is this process's user and system CPU time so far.
func ProcCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Load is the wall and process CPU time a RunLoad took.
type Load struct{ Wall, CPU time.Duration }

// RunLoad runs n operations spread over workers goroutines (each takes the next operation
// when it finishes one) and returns the time they took. The first error stops its worker and
// is returned; the others finish.
func RunLoad(workers, n int, op func(worker int) error) (Load, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	left := n
	cpu0, t0 := ProcCPU(), time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if left == 0 {
					mu.Unlock()
					return
				}
				left--
				mu.Unlock()
				if err := op(w); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return Load{Wall: time.Since(t0), CPU: ProcCPU() - cpu0}, first
}

// Conn is a client connection with a buffered reader for what comes back.
type Conn struct {
	net.Conn
	R *bufio.Reader
}

// DialConns opens n connections to addr (one per load worker), closed when tb ends.
func DialConns(tb testing.TB, addr string, n int) []Conn {
	tb.Helper()
	cs := make([]Conn, n)
	for i := range cs {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		cs[i] = Conn{c, bufio.NewReader(c)}
	}
	return cs
}
