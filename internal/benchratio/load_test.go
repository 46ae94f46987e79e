package benchratio

import (
	"errors"
	"sync/atomic"
	"testing"
)

func TestRunLoad(t *testing.T) {
	var ops atomic.Int64
	seen := make([]atomic.Bool, 4)
	l, err := RunLoad(4, 1000, func(w int) error {
		ops.Add(1)
		seen[w].Store(true)
		return nil
	})
	if err != nil || ops.Load() != 1000 || l.Wall <= 0 {
		t.Fatalf("ran %d operations, err %v, wall %s; want 1000, nil, > 0", ops.Load(), err, l.Wall)
	}
	boom := errors.New("boom")
	ops.Store(0)
	if _, err := RunLoad(2, 100, func(int) error { ops.Add(1); return boom }); !errors.Is(err, boom) {
		t.Errorf("err %v, want boom", err)
	}
	if n := ops.Load(); n != 2 {
		t.Errorf("%d operations after both workers failed, want 2 (one each)", n)
	}
}
