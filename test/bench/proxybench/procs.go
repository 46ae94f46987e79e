package proxybench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/countersign/countersign/internal/testnet"
)

// proc is a process this harness started; it is stopped by its PID and nothing else.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan struct{}
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func startProc(name string, env []string, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	w := lockedBuf{p.mu, p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process's PID, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// pids are the process and, for nginx, its workers (the children of the master).
func (p *proc) pids() []int {
	out := []int{p.pid()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.pid(), p.pid()))
	if err == nil {
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// usage is a process's resident memory and CPU time (its children's included, for nginx).
type usage struct {
	rssKiB, hwmKiB int64
	anonKiB        int64 // RssAnon: the part of VmRSS that is not mapped files (the binary)
	cpu            time.Duration
}

// clkTck is USER_HZ, which is 100 on every Linux architecture Go supports.
const clkTck = 100

func (p *proc) usage() (usage, error) {
	var u usage
	for _, pid := range p.pids() {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return u, err
		}
		for _, line := range strings.Split(string(st), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:" || f[0] == "RssAnon:") {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				switch f[0] {
				case "VmRSS:":
					u.rssKiB += n
				case "VmHWM:":
					u.hwmKiB += n
				default:
					u.anonKiB += n
				}
			}
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return u, err
		}
		// Fields after the command name (which may hold spaces) start at field 3.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) < 13 {
			return u, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		stt, _ := strconv.ParseInt(f[12], 10, 64)
		u.cpu += time.Duration(ut+stt) * time.Second / clkTck
	}
	return u, nil
}

// freePort returns a loopback address with a port free at the time of the call (below the
// ephemeral range, so no outgoing connection takes it before the process binds it).
func freePort() (string, error) {
	p, err := testnet.Port()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

// waitTCP waits until addr accepts connections or p exits.
func waitTCP(ctx context.Context, p *proc, addr string) error {
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %s", p.name, p.output())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %s not listening: %w", p.name, addr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitReady polls a proxy's /readyz.
func waitReady(ctx context.Context, p *proc, admin string) error {
	c := &http.Client{Timeout: time.Second}
	for {
		if resp, err := c.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("%s exited: %s", p.name, p.output())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never became ready: %w\n%s", p.name, ctx.Err(), p.output())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// scanLine waits for a line of p's output matching prefix-free pattern fn.
func scanLine(ctx context.Context, p *proc, fn func(string) (string, bool)) (string, error) {
	for {
		sc := bufio.NewScanner(strings.NewReader(p.output()))
		for sc.Scan() {
			if v, ok := fn(sc.Text()); ok {
				return v, nil
			}
		}
		if p.exited() {
			return "", fmt.Errorf("%s exited: %s", p.name, p.output())
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s: %w: %s", p.name, ctx.Err(), p.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func writeFile(dir, name, content string) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(content), 0o600)
}
