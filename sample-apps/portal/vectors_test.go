// Package portal_test runs the portal's browser verifier (verify.js, a second implementation
// of docs/protocol.md in JavaScript) on the published test vectors with Node.
package portal_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// policyCodes are the reasons the portal's verifier leaves to what it shows rather than refuses:
// it identifies each hop's enclave (MRENCLAVE, debug) for the user but applies no claim policy
// and takes no --identity/--answerer constraint (docs/healthcare-demo.md).
var policyCodes = map[string]bool{
	"debug_not_allowed":            true,
	"no_identity_matches":          true,
	"claim_missing":                true,
	"claim_type":                   true,
	"attestation_type_not_allowed": true,
	"mrenclave_mismatch":           true,
}

func TestVerifyJSOnVectors(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is needed to run the portal's verifier (scripts/install-deps.sh installs it): %v", err)
	}
	dir, _ := filepath.Abs("../../docs/vectors")
	out, err := exec.Command(node, "testdata/vectors.mjs", dir).Output()
	if err != nil {
		t.Fatalf("node testdata/vectors.mjs: %v", err)
	}
	var cases []struct{ Name, Verdict, Code string }
	b, err := os.ReadFile(filepath.Join(dir, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	got := map[string]struct {
		OK     bool
		Reason string
	}{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r struct {
			Name, Reason string
			OK           bool
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		got[r.Name] = struct {
			OK     bool
			Reason string
		}{r.OK, r.Reason}
	}
	streamed := 0
	for _, c := range cases {
		r, ok := got[c.Name]
		if !ok {
			t.Errorf("%s: no verdict from verify.js", c.Name)
			continue
		}
		if len(c.Name) > 8 && bytes.Contains([]byte(c.Name), []byte("streamed")) {
			streamed++
		}
		switch {
		case c.Verdict == "accepted" && !r.OK:
			t.Errorf("%s: verify.js refused a genuine receipt: %s", c.Name, r.Reason)
		case c.Verdict == "rejected" && r.OK && !policyCodes[c.Code]:
			t.Errorf("%s: verify.js accepted a receipt the page refuses (%s)", c.Name, c.Code)
		}
	}
	if streamed == 0 {
		t.Error("no streamed-exchange vectors ran")
	}
}
