package platform

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Browser is headless Chromium driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: Chromium reads NUL-terminated JSON on fd 3 and writes on fd 4),
// so no WebSocket client or npm package is needed.
type Browser struct {
	t       testing.TB
	cmd     *exec.Cmd
	w       *os.File
	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpMsg
	session string
	done    chan struct{}
	stderr  *lockedBuf
}

type cdpMsg struct {
	ID     int             `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.b) < 1<<20 {
		l.b = append(l.b, p...)
	}
	return len(p), nil
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// ChromiumPath finds the Chromium binary (Debian's chromium package).
func ChromiumPath(t testing.TB) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if testing.Short() {
		t.Skip("chromium not installed (-short)")
	}
	t.Fatal("chromium is not installed: the portal's browser test needs it (Debian: apt-get install chromium; scripts/deps.d/platform.txt)")
	return ""
}

// StartBrowser starts headless Chromium with a fresh profile. spki lists base64 SHA-256 SPKI
// hashes of the loopback servers' self-signed certificates the browser should accept.
func StartBrowser(t testing.TB, spki []string) *Browser {
	t.Helper()
	path := ChromiumPath(t)
	toChrome, ourEnd, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	theirEnd, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir(), "--remote-debugging-pipe",
		"--window-size=1366,900", "about:blank",
	}
	if len(spki) > 0 {
		args = append(args, "--ignore-certificate-errors-spki-list="+joinComma(spki))
	}
	cmd := exec.Command(path, args...)
	cmd.ExtraFiles = []*os.File{toChrome, fromChrome} // fd 3: Chromium reads; fd 4: it writes
	b := &Browser{
		t:       t,
		cmd:     cmd,
		w:       ourEnd,
		pending: map[int]chan cdpMsg{},
		done:    make(chan struct{}),
		stderr:  &lockedBuf{},
	}
	cmd.Stderr = b.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	toChrome.Close()
	fromChrome.Close()
	go b.read(theirEnd)
	t.Cleanup(b.Close)

	var target struct{ TargetID string }
	b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct{ SessionID string }
	b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	b.session = att.SessionID
	b.Call("Page.enable", nil, nil)
	b.Call("Runtime.enable", nil, nil)
	b.Call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1366, "height": 900, "deviceScaleFactor": 1, "mobile": false}, nil)
	return b
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

func (b *Browser) read(r *os.File) {
	defer close(b.done)
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		raw, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMsg
		if json.Unmarshal(raw[:len(raw)-1], &m) != nil || m.ID == 0 {
			continue // events are not used
		}
		b.mu.Lock()
		ch := b.pending[m.ID]
		delete(b.pending, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// Call sends a command to the page's session and decodes its result into out.
func (b *Browser) Call(method string, params, out any) {
	b.t.Helper()
	b.call(b.session, method, params, out)
}

func (b *Browser) call(session, method string, params, out any) {
	b.t.Helper()
	if err := b.try(session, method, params, out); err != nil {
		b.t.Fatalf("%v\nchromium stderr:\n%s", err, b.stderr.String())
	}
}

func (b *Browser) try(session, method string, params, out any) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpMsg, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	js, _ := json.Marshal(msg)
	if _, err := b.w.Write(append(js, 0)); err != nil {
		return fmt.Errorf("CDP %s: write: %v", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("CDP %s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		if out != nil {
			return json.Unmarshal(m.Result, out)
		}
		return nil
	case <-b.done:
		return fmt.Errorf("CDP %s: chromium exited", method)
	case <-time.After(60 * time.Second):
		return fmt.Errorf("CDP %s: no answer in 60s", method)
	}
}

// Eval evaluates a JavaScript expression (promises awaited) and decodes its value.
func (b *Browser) Eval(expr string, out any) {
	b.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	b.Call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	if res.ExceptionDetails != nil {
		b.t.Fatalf("evaluating %q: %s %s", expr, res.ExceptionDetails.Text, res.ExceptionDetails.Exception.Description)
	}
	if out != nil && len(res.Result.Value) > 0 {
		if err := json.Unmarshal(res.Result.Value, out); err != nil {
			b.t.Fatalf("evaluating %q: %v (%s)", expr, err, res.Result.Value)
		}
	}
}

// WaitFor polls a boolean expression until it is true or the timeout passes.
func (b *Browser) WaitFor(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		b.Eval("Boolean("+expr+")", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var body string
			b.Eval("document.body ? document.body.innerText : ''", &body)
			b.t.Fatalf("timed out waiting for %s (%s); the page says:\n%s", what, expr, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Navigate loads url.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	var res struct{ ErrorText string }
	b.Call("Page.navigate", map[string]any{"url": url}, &res)
	if res.ErrorText != "" {
		b.t.Fatalf("navigate %s: %s", url, res.ErrorText)
	}
}

// SetFile sets the files of the <input type=file> matching selector.
func (b *Browser) SetFile(selector, path string) {
	b.t.Helper()
	var doc struct{ Root struct{ NodeID int } }
	b.Call("DOM.getDocument", map[string]any{"depth": 0}, &doc)
	var q struct{ NodeID int }
	b.Call("DOM.querySelector", map[string]any{"nodeId": doc.Root.NodeID, "selector": selector}, &q)
	if q.NodeID == 0 {
		b.t.Fatalf("no element matches %s", selector)
	}
	b.Call("DOM.setFileInputFiles", map[string]any{"nodeId": q.NodeID, "files": []string{path}}, nil)
}

// Screenshot writes a PNG of the page.
func (b *Browser) Screenshot(path string) {
	b.t.Helper()
	var res struct{ Data string }
	b.Call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &res)
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// Close stops Chromium (its whole process group).
func (b *Browser) Close() {
	_ = b.try("", "Browser.close", nil, nil)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	_ = b.cmd.Wait()
	b.w.Close()
}
