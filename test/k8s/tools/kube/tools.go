//go:build tools

// Package tools pins kube-apiserver so `go build k8s.io/kubernetes/cmd/kube-apiserver` resolves
// inside this module. Built by test/k8s/build.sh; never imported.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
