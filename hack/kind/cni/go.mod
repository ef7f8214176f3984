module llamaop.io/hack/kind/cni

go 1.26.0
