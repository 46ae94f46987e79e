package attester

// The attesters satisfy the interface their consumers use. (In a test file: an assertion in
// the package itself would be in the trust core, whose images are pinned by digest.)
var (
	_ Attester = SGX{}
	_ Attester = (*Sim)(nil)
)
