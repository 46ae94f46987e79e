package server_test

import (
	"os"
	"testing"
	"time"

	"github.com/countersign/countersign/proxy/chain"
)

// TestMain lets a benchmark run compare batch hold times: CS_BATCH_HOLD=0 (group commit
// only), 100us (the default), 200us ...
func TestMain(m *testing.M) {
	if d, err := time.ParseDuration(os.Getenv("CS_BATCH_HOLD")); err == nil {
		chain.BatchHold = d
	}
	os.Exit(m.Run())
}
