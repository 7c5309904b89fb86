// Command pause is the sandbox ("infra") container of the pods on opsync's test node.
//
// The official pause image cannot be pulled where the node runs (no registry but the Go module
// proxy is reachable), so this stand-in is built with Go and imported into the node's containerd
// as its sandbox image. It holds the pod's namespaces open, exits on SIGINT/SIGTERM, and, as PID 1
// of a pod that shares its process namespace, reaps the children that get re-parented to it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
