// Command pause is the pod sandbox's process: it holds the pod's namespaces open and does
// nothing else until the runtime stops it. It is the `pause` image the local cluster's containerd
// uses as its sandbox image (docs/images.md), built here instead of pulled. A static binary: it
// exits 0 on SIGTERM or SIGINT and, as PID 1 of a pod that shares its PID namespace, reaps the
// orphans re-parented to it, as Kubernetes' own pause does.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("countersign pause")
		return
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
