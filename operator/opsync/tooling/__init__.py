"""Development and demo tooling, shipped in the wheel but never imported by the operator.

Why this package exists: to run opsync for real without a cluster or a
1Password account. :mod:`connectserver` is the local Connect server (``opsync
connect-server``; the Helm chart can run it as a sidecar), :mod:`binaries` and
:mod:`controlplane` build and start a real kube-apiserver + etcd, :mod:`harness`
starts and stops the processes the demo, the benchmark and the tests share, and
:mod:`demo` is ``make run``. ``make lint`` checks that nothing in the operator's
runtime imports this package.
"""
