//go:build tools

// Package tools pins the Helm client that build.sh compiles from this module.
package tools

import _ "helm.sh/helm/v3/pkg/action"
