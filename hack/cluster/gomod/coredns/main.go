// Command coredns is CoreDNS with only the plugins the local cluster's DNS needs: the kubernetes
// plugin serving cluster.local from the API server, and template answering everything else
// (pods get no upstream resolver: nothing leaves the machine). Fewer plugins keep the build short.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

// The order of CoreDNS's own plugin.cfg, restricted to the plugins above.
var directives = []string{"reload", "bind", "ready", "health", "errors", "log", "cache", "template", "kubernetes"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
