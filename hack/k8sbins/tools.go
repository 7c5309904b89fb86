//go:build tools

// Package tools pins the kube-apiserver, kubectl and node (kubelet,
// kube-controller-manager, kube-scheduler, kube-proxy) main packages so that
// `go mod tidy` keeps their whole dependency graph in go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
