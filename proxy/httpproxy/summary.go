package httpproxy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/countersign/countersign/proxy/chain"
	"github.com/countersign/countersign/proxy/identity"
)

// HopSummary is one hop in the Countersign-Verified header handed to the app.
type HopSummary struct {
	Identity  string            `json:"identity"`
	MREnclave string            `json:"mrenclave"`
	MRSigner  string            `json:"mrsigner"`
	Debug     bool              `json:"debug"`
	Claimed   map[string]string `json:"claimed,omitempty"`
	TS        int64             `json:"ts"`
}

// Summary is the Countersign-Verified header (JSON, ASCII only).
type Summary struct {
	Peer string       `json:"peer"`
	Hops []HopSummary `json:"hops"`
}

func summarize(peer string, ch *chain.Chain) string {
	s := Summary{Peer: peer}
	for _, h := range ch.Hops {
		c := h.Token.Claims
		hs := HopSummary{Identity: h.Identity, MREnclave: c.SGXMREnclave, MRSigner: c.SGXMRSigner, TS: h.Entry.TS}
		if c.SGXIsDebuggable != nil {
			hs.Debug = *c.SGXIsDebuggable
		}
		if h.Token.Runtime != nil {
			hs.Claimed = h.Token.Runtime.Claimed
		}
		s.Hops = append(s.Hops, hs)
	}
	b, _ := json.Marshal(s)
	return asciiOnly(string(b), 1<<16)
}

// asciiOnly escapes non-ASCII and control bytes as \uXXXX so a value is a safe header value.
func asciiOnly(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			fmt.Fprintf(&b, "\\u%04x", r)
		} else {
			b.WriteRune(r)
		}
		if b.Len() >= max {
			break
		}
	}
	return b.String()
}

func selfFromCert(c *identity.Current) chain.Self { return chain.Self{Key: c.Key, Token: c.Token.Raw} }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
