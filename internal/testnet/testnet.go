// Package testnet holds network helpers for tests.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Ports are picked at random below the kernel's ephemeral range: a port the kernel hands out
// for "127.0.0.1:0" can be taken, between our probe and the real bind, as the source port of
// any outgoing connection on the machine (parallel test packages make thousands), which made
// "address already in use" flakes. Below the range only another explicit bind can take it.
const lowestPort = 10000

var (
	mu   sync.Mutex
	used = map[int]bool{} // handed out by this process already
)

// Port returns a loopback TCP port that was free a moment ago and that this process has not
// handed out before.
func Port() (int, error) {
	hi := ephemeralLow() - 1
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := lowestPort + rand.IntN(hi-lowestPort+1)
		if used[p] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		used[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("no free loopback port in %d-%d after 200 tries", lowestPort, hi)
}

// ephemeralLow is the bottom of the kernel's ephemeral port range (32768 if unknown).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lowestPort+1000 {
				return n
			}
		}
	}
	return 32768
}

// FreePort is Port for tests: it fails the test when no port is free.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreeAddr is FreePort as "127.0.0.1:port".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(FreePort(t))
}
