// Command llamaop-kindnet is the pod network of the project's offline kind node image, standing in for
// kind's kindnetd (its image cannot be fetched here). On each node it
//   - writes a CNI config for the node's spec.podCIDR: ptp + host-local + portmap, the shape kindnetd's
//     config has (https://github.com/kubernetes-sigs/kind/tree/main/images/kindnetd);
//   - keeps a route to every other node's podCIDR through that node's InternalIP (kind's nodes share one
//     docker network, so each is one hop away);
//   - masquerades what pods send outside the pod subnet (to the docker host, for example).
//
// It lists nodes from the API server at CONTROL_PLANE_ENDPOINT (kind adds that variable to the
// manifest) with the pod's ServiceAccount token, so it needs neither kube-proxy nor cluster DNS, which
// cannot work before it does. Routes and NAT go through the image's own `ip` and `nft`.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const serviceAccount = "/var/run/secrets/kubernetes.io/serviceaccount"

type node struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		PodCIDR string `json:"podCIDR"`
	} `json:"spec"`
	Status struct {
		Addresses []struct {
			Type    string `json:"type"`
			Address string `json:"address"`
		} `json:"addresses"`
	} `json:"status"`
}

func (n node) internalIP() string {
	for _, a := range n.Status.Addresses {
		if a.Type == "InternalIP" && net.ParseIP(a.Address).To4() != nil {
			return a.Address
		}
	}
	return ""
}

type config struct {
	nodeName, endpoint, podSubnet, confDir string
}

func env(name string) string {
	v := os.Getenv(name)
	if v == "" {
		log.Fatalf("%s is not set", name)
	}
	return v
}

func client() (*http.Client, error) {
	ca, err := os.ReadFile(filepath.Join(serviceAccount, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s/ca.crt", serviceAccount)
	}
	return &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}, nil
}

func listNodes(c *http.Client, endpoint string) ([]node, error) {
	// The token is re-read each time: the kubelet rotates bound ServiceAccount tokens.
	token, err := os.ReadFile(filepath.Join(serviceAccount, "token"))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, "https://"+endpoint+"/api/v1/nodes", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/nodes: %s", resp.Status)
	}
	var list struct {
		Items []node `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// writeConfig writes the node's CNI config when it differs from what is there; true once it exists.
func writeConfig(dir, podCIDR string) (bool, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "llamaop-kindnet",
		"plugins": []any{
			map[string]any{
				"type":   "ptp",
				"ipMasq": false,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": "/run/cni-ipam-state",
					"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return false, err
	}
	path := filepath.Join(dir, "10-llamaop-kindnet.conflist")
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return true, nil
	}
	// Atomically: the container runtime may read the directory at any moment.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, err
	}
	log.Printf("wrote %s for podCIDR %s", path, podCIDR)
	return true, nil
}

func run(name string, stdin string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// masquerade replaces the NAT table in one nft transaction (create, delete, define: idempotent).
func masquerade(podSubnet string) error {
	rules := fmt.Sprintf(`table ip llamaop-kindnet
delete table ip llamaop-kindnet
table ip llamaop-kindnet {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[1]s ip daddr != %[1]s masquerade
	}
}
`, podSubnet)
	return run("nft", rules, "-f", "-")
}

// routes keeps a route to each other node's podCIDR; a route that cannot be added (a node whose
// address is not on this network, such as a kwok node) is reported once, not retried until it changes.
type routes struct {
	have   map[string]string // podCIDR -> gateway, as installed
	failed map[string]string // podCIDR -> gateway that failed
}

func (r *routes) sync(self string, nodes []node) {
	want := map[string]string{}
	for _, n := range nodes {
		if n.Metadata.Name != self && n.Spec.PodCIDR != "" && n.internalIP() != "" {
			want[n.Spec.PodCIDR] = n.internalIP()
		}
	}
	for cidr, gw := range want {
		if r.have[cidr] == gw || r.failed[cidr] == gw {
			continue
		}
		if err := run("ip", "", "route", "replace", cidr, "via", gw); err != nil {
			log.Printf("no route to %s via %s: %v", cidr, gw, err)
			r.failed[cidr] = gw
			continue
		}
		delete(r.failed, cidr)
		r.have[cidr] = gw
		log.Printf("route %s via %s", cidr, gw)
	}
	for cidr := range r.have {
		if _, ok := want[cidr]; !ok {
			if err := run("ip", "", "route", "del", cidr); err != nil {
				log.Printf("removing route %s: %v", cidr, err)
			}
			delete(r.have, cidr)
		}
	}
}

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	cfg := config{
		nodeName:  env("NODE_NAME"),
		endpoint:  env("CONTROL_PLANE_ENDPOINT"),
		podSubnet: env("POD_SUBNET"),
		confDir:   env("CNI_CONF_DIR"),
	}
	c, err := client()
	if err != nil {
		log.Fatal(err)
	}
	if err := masquerade(cfg.podSubnet); err != nil {
		log.Fatal(err)
	}
	r := &routes{have: map[string]string{}, failed: map[string]string{}}
	configured := false
	for {
		nodes, err := listNodes(c, cfg.endpoint)
		if err != nil {
			log.Print(err)
		}
		for _, n := range nodes {
			if n.Metadata.Name == cfg.nodeName && n.Spec.PodCIDR != "" {
				if configured, err = writeConfig(cfg.confDir, n.Spec.PodCIDR); err != nil {
					log.Print(err)
				}
			}
		}
		r.sync(cfg.nodeName, nodes)
		// Quick until this node can start pods, then at the pace nodes come and go.
		if configured {
			time.Sleep(10 * time.Second)
		} else {
			time.Sleep(time.Second)
		}
	}
}
