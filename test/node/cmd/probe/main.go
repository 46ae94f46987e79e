// Command probe is the unmodified client of the on-node tests (test/node): a static binary in an
// image with no shell, run in pods with `kubectl exec POD -- /probe VERB ...`. It makes plain
// connections (no Countersign code), so what it sees is what any app in that pod would see:
// through its sidecar, through transparent interception, or straight to the network.
//
//	probe sleep                                  wait for SIGTERM (the pod's main process)
//	probe http [-n N] [-insecure] [-method M] [-body B] [-header K:V] URL
//	probe tcp [-timeout D] ADDR PAYLOAD         write PAYLOAD (Go-quoted escapes allowed), print the reply
//	probe writeloop -url BASE [-for D]           create patients through the records API; print what was acknowledged
//
// Every verb prints one JSON object on stdout and exits 0 when the operation succeeded, 1 when
// it failed (the JSON says how), 2 on a usage error.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout))
}

type usageError struct{ error }

func run(ctx context.Context, args []string, out io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: probe sleep | http URL | tcp ADDR PAYLOAD | writeloop -url BASE")
		return 2
	}
	var res any
	var err error
	switch args[0] {
	case "sleep":
		<-ctx.Done()
		return 0
	case "http":
		res, err = httpVerb(ctx, args[1:])
	case "tcp":
		res, err = tcpVerb(args[1:])
	case "writeloop":
		res, err = writeLoop(ctx, args[1:])
	default:
		err = usageError{fmt.Errorf("unknown verb %q (expected sleep, http, tcp or writeloop)", args[0])}
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, "probe:", err)
		return 2
	}
	if res != nil {
		b, _ := json.Marshal(res)
		fmt.Fprintf(out, "%s\n", b)
	}
	if err != nil {
		return 1
	}
	return 0
}

// httpResult is what `probe http` prints.
type httpResult struct {
	OK      bool              `json:"ok"`
	Status  int               `json:"status,omitempty"`
	Header  map[string]string `json:"header,omitempty"`
	Body    string            `json:"body,omitempty"`
	Error   string            `json:"error,omitempty"`
	N       int               `json:"n"`
	P50us   int64             `json:"p50_us,omitempty"`
	P99us   int64             `json:"p99_us,omitempty"`
	Elapsed string            `json:"elapsed"`
}

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ",") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func httpVerb(ctx context.Context, args []string) (any, error) {
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	n := fs.Int("n", 1, "requests, one after the other on one keep-alive connection")
	insecure := fs.Bool("insecure", false, "do not verify the server's certificate (https)")
	method := fs.String("method", http.MethodGet, "request method")
	body := fs.String("body", "", "request body")
	timeout := fs.Duration("timeout", 5*time.Second, "per request")
	var headers headerFlags
	fs.Var(&headers, "header", "K:V, repeatable")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 || *n < 1 {
		return nil, usageError{fmt.Errorf("http: want [flags] URL with -n >= 1 (%v)", err)}
	}
	url := fs.Arg(0)
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: *insecure}, //nolint:gosec // a test client, by flag
		MaxIdleConnsPerHost: 1,
	}}
	res := &httpResult{}
	start := time.Now()
	lat := make([]time.Duration, 0, *n)
	for i := 0; i < *n; i++ {
		req, err := http.NewRequestWithContext(ctx, *method, url, strings.NewReader(*body))
		if err != nil {
			return nil, usageError{err}
		}
		for _, h := range headers {
			k, v, ok := strings.Cut(h, ":")
			if !ok {
				return nil, usageError{fmt.Errorf("http: -header %q: want K:V", h)}
			}
			req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			res.Error, res.N, res.Elapsed = err.Error(), i, time.Since(start).String()
			return res, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		lat = append(lat, time.Since(t0))
		res.Status = resp.StatusCode
		if err != nil {
			res.Error, res.N = err.Error(), i
			return res, err
		}
		if i == *n-1 {
			res.Body = string(b)
			res.Header = map[string]string{}
			for k := range resp.Header {
				res.Header[k] = resp.Header.Get(k)
			}
		}
		if resp.StatusCode >= 300 {
			res.N, res.Elapsed = i+1, time.Since(start).String()
			res.Body = string(b)
			return res, fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	slices.Sort(lat)
	res.OK, res.N, res.Elapsed = true, len(lat), time.Since(start).String()
	res.P50us = lat[len(lat)/2].Microseconds()
	res.P99us = lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()
	return res, nil
}

// tcpResult is what `probe tcp` prints.
type tcpResult struct {
	OK    bool   `json:"ok"`
	Reply string `json:"reply,omitempty"`
	Error string `json:"error,omitempty"`
}

func tcpVerb(args []string) (any, error) {
	fs := flag.NewFlagSet("tcp", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 3*time.Second, "dial, write and read deadline")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		return nil, usageError{fmt.Errorf("tcp: want [flags] ADDR PAYLOAD (%v)", err)}
	}
	payload, err := strconv.Unquote(`"` + fs.Arg(1) + `"`)
	if err != nil {
		return nil, usageError{fmt.Errorf("tcp: payload: %v", err)}
	}
	res := &tcpResult{}
	conn, err := net.DialTimeout("tcp", fs.Arg(0), *timeout)
	if err != nil {
		res.Error = err.Error()
		return res, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(*timeout))
	if _, err := io.WriteString(conn, payload); err != nil {
		res.Error = err.Error()
		return res, err
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	res.Reply = string(buf[:n])
	if err != nil {
		res.Error = err.Error()
		return res, err
	}
	res.OK = true
	return res, nil
}

// loopResult is what `probe writeloop` prints: every patient the API acknowledged (201 with an
// id), and how many attempts failed.
type loopResult struct {
	Acked    []string `json:"acked"`
	Failed   int      `json:"failed"`
	Errors   []string `json:"errors,omitempty"`
	Attempts int      `json:"attempts"`
}

func writeLoop(ctx context.Context, args []string) (any, error) {
	fs := flag.NewFlagSet("writeloop", flag.ContinueOnError)
	base := fs.String("url", "", "records API base URL (https://host:port)")
	dur := fs.Duration("for", 30*time.Second, "how long to write")
	every := fs.Duration("every", 50*time.Millisecond, "pause between writes")
	if err := fs.Parse(args); err != nil || *base == "" {
		return nil, usageError{fmt.Errorf("writeloop: want -url BASE (%v)", err)}
	}
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the portal's self-signed certificate
	}}
	res := &loopResult{Acked: []string{}}
	deadline := time.Now().Add(*dur)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		res.Attempts++
		body, _ := json.Marshal(map[string]string{"name": fmt.Sprintf("Loop %d", i), "dateOfBirth": "1970-01-01"})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, *base+"/api/patients", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("writeloop-%d-%d", os.Getpid(), i))
		resp, err := client.Do(req)
		if err != nil {
			res.fail(err.Error())
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			var p struct {
				ID string `json:"id"`
			}
			if resp.StatusCode == http.StatusCreated && json.Unmarshal(b, &p) == nil && p.ID != "" {
				res.Acked = append(res.Acked, p.ID)
			} else {
				res.fail(fmt.Sprintf("status %d: %.200s", resp.StatusCode, b))
			}
		}
		time.Sleep(*every)
	}
	return res, nil
}

func (r *loopResult) fail(msg string) {
	r.Failed++
	if len(r.Errors) < 10 {
		r.Errors = append(r.Errors, msg)
	}
}
