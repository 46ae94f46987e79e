package platform

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDurabilityUnderKill9: a write load through the records sidecar while redis-server and
// then the records API are killed with SIGKILL and restarted. Clients retry each create with
// its Idempotency-Key until it is acknowledged. Afterwards every acknowledged patient is
// stored, and no request was written twice.
func TestDurabilityUnderKill9(t *testing.T) {
	p := Start(t)
	c := p.Client()
	c.Timeout = 10 * time.Second
	base := strings.TrimSuffix(p.PortalURL, "/")

	var (
		mu    sync.Mutex
		acked = map[string]string{} // name (one per request) -> id acknowledged
		stop  atomic.Bool
		fails atomic.Int64
		wg    sync.WaitGroup
	)
	create := func(name string) (string, bool) {
		body := fmt.Sprintf(`{"name":%q,"dateOfBirth":"1990-01-01"}`, name)
		req, _ := http.NewRequest("POST", base+"/api/patients", bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", name)
		resp, err := c.Do(req)
		if err != nil {
			return "", false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 201 && resp.StatusCode != 200 {
			return "", false
		}
		var out struct{ ID, Name string }
		if err := json.Unmarshal(b, &out); err != nil || out.Name != name {
			t.Errorf("acknowledged %q with %s", name, b)
			return "", false
		}
		return out.ID, true
	}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				name := fmt.Sprintf("load-%d-%d", w, i)
				deadline := time.Now().Add(60 * time.Second)
				for {
					if id, ok := create(name); ok {
						mu.Lock()
						acked[name] = id
						mu.Unlock()
						break
					}
					fails.Add(1)
					if time.Now().After(deadline) {
						t.Errorf("%s never acknowledged", name)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}(w)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitMore := func(n int) {
		deadline := time.Now().Add(60 * time.Second)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("the load stalled at %d acknowledged writes", count())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitMore(50)
	redisProc := p.Procs["redis-server"]
	redisProc.Kill9()
	t.Logf("killed redis-server after %d acknowledged writes", count())
	time.Sleep(300 * time.Millisecond)
	redisProc.Start()
	p.WaitTCP("redis-server", p.RedisAddr)
	waitMore(count() + 50)
	rec := p.Procs["records"]
	rec.Kill9()
	t.Logf("killed the records API after %d acknowledged writes", count())
	time.Sleep(300 * time.Millisecond)
	rec.Start()
	waitMore(count() + 50)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d acknowledged writes, %d failed attempts retried", count(), fails.Load())
	if fails.Load() == 0 {
		t.Errorf("no request failed: the kills did not interrupt the load, so this run proves nothing")
	}

	// Read everything back (after a further restart of redis-server from its AOF alone).
	redisProc.Stop()
	redisProc.Start()
	p.WaitTCP("redis-server", p.RedisAddr)
	seen := map[string]int{}
	ids := map[string]string{}
	for offset := 0; ; offset += 1000 {
		var page struct {
			Patients []struct{ ID, Name string }
			Total    int
		}
		var code int
		for try := 0; try < 100; try++ {
			if code = apiCall(t, c, "GET", fmt.Sprintf("%s/api/patients?offset=%d&limit=1000", base, offset), "", nil, nil, &page); code == 200 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code != 200 {
			t.Fatalf("listing patients: %d", code)
		}
		for _, pt := range page.Patients {
			seen[pt.Name]++
			ids[pt.Name] = pt.ID
		}
		if offset+1000 >= page.Total {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for name, id := range acked {
		if ids[name] != id {
			t.Errorf("acknowledged %s (%s) is not stored (found %q)", name, id, ids[name])
		}
	}
	for name, n := range seen {
		if n > 1 {
			t.Errorf("%s stored %d times", name, n)
		}
	}
}
