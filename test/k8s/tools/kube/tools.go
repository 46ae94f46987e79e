//go:build tools

// Package tools pins the Kubernetes components so `go build k8s.io/kubernetes/cmd/<name>...`
// resolves inside this module. Built by test/k8s/build.sh in one `go build` (they share most
// compiled packages); never imported.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
