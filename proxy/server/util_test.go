package server_test

import (
	"encoding/base64"
	"math/big"
)

func big1() *big.Int { return big.NewInt(1) }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
