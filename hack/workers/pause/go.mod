module llamaop.io/hack/workers/pause

go 1.26.0
