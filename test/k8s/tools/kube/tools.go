//go:build tools

// Package tools pins kube-apiserver and kube-controller-manager so `go build
// k8s.io/kubernetes/cmd/<name>` resolves inside this module. Built by test/k8s/build.sh; never
// imported.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
