// Command socket-proxy is the e2e STAND-IN for wollomatic/socket-proxy (whose
// Go module the module proxy here does not serve): the same command-line
// interface for the flags compose/compose.docker-launcher.yaml uses, with the
// same semantics as upstream's cmd/socket-proxy:
//
//   - -allowfrom: comma list of CIDRs or host names, resolved on every request
//     (no cache), anything else gets 403;
//   - -allow<METHOD>=REGEX (repeatable): the request path must match
//     ^REGEX$ for its method, else 403 (405 for a method with no list);
//   - -allowbindmountfrom=DIR[,DIR]: a containers/create whose HostConfig
//     binds (Binds, or Mounts of type bind) a host path outside DIR is refused;
//   - then the request goes to the Docker socket unchanged.
//
// -watchdoginterval, -stoponwatchdog and -shutdowngracetime are accepted and
// ignored. Nothing here is used by the shipped stack.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

var methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE", "OPTIONS"}

func main() {
	listenIP := flag.String("listenip", "127.0.0.1", "listen address")
	port := flag.String("proxyport", "2375", "listen port")
	socket := flag.String("socketpath", "/var/run/docker.sock", "Docker socket")
	allowFrom := flag.String("allowfrom", "127.0.0.1/32", "allowed client CIDRs or host names")
	bindFrom := flag.String("allowbindmountfrom", "", "allowed bind mount source directories")
	flag.String("loglevel", "info", "ignored")
	flag.Int("watchdoginterval", 0, "ignored")
	flag.Bool("stoponwatchdog", false, "ignored")
	flag.Int("shutdowngracetime", 10, "ignored")
	allow := map[string]*multi{}
	for _, m := range methods {
		v := &multi{}
		allow[m] = v
		flag.Var(v, "allow"+m, "allowed "+m+" path regex")
	}
	flag.Parse()

	rules := map[string][]*regexp.Regexp{}
	for m, list := range allow {
		for _, r := range *list {
			rules[m] = append(rules[m], regexp.MustCompile("^"+r+"$"))
		}
	}
	var bindDirs []string
	if *bindFrom != "" {
		bindDirs = strings.Split(*bindFrom, ",")
	}

	target, _ := url.Parse("http://docker")
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", *socket)
	}}

	handler := func(w http.ResponseWriter, r *http.Request) {
		if !clientAllowed(r.RemoteAddr, strings.Split(*allowFrom, ",")) {
			block(w, r, "forbidden IP", http.StatusForbidden)
			return
		}
		list, ok := rules[r.Method]
		if !ok {
			block(w, r, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		matched := false
		for _, re := range list {
			if re.MatchString(r.URL.Path) {
				matched = true
				break
			}
		}
		if !matched {
			block(w, r, "path not allowed", http.StatusForbidden)
			return
		}
		if len(bindDirs) > 0 && r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/containers/create") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if err := checkBinds(body, bindDirs); err != nil {
				block(w, r, "bind mount restriction: "+err.Error(), http.StatusForbidden)
				return
			}
		}
		log.Printf("allowed %s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		proxy.ServeHTTP(w, r)
	}
	addr := net.JoinHostPort(*listenIP, *port)
	log.Printf("socket-proxy stand-in listening on %s -> %s", addr, *socket)
	if err := http.ListenAndServe(addr, http.HandlerFunc(handler)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func block(w http.ResponseWriter, r *http.Request, why string, code int) {
	log.Printf("blocked %s %s from %s: %s", r.Method, r.URL.Path, r.RemoteAddr, why)
	http.Error(w, http.StatusText(code), code)
}

func clientAllowed(remote string, allowFrom []string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	for _, item := range allowFrom {
		if _, n, err := net.ParseCIDR(item); err == nil {
			if n.Contains(ip) {
				return true
			}
			continue
		}
		ips, err := net.LookupIP(item)
		if err != nil {
			continue
		}
		for _, a := range ips {
			if a.Equal(ip) {
				return true
			}
		}
	}
	return false
}

func checkBinds(body []byte, dirs []string) error {
	var req struct {
		HostConfig struct {
			Binds  []string
			Mounts []struct{ Type, Source string }
		}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return fmt.Errorf("unreadable body: %w", err)
	}
	var sources []string
	for _, b := range req.HostConfig.Binds {
		src := strings.SplitN(b, ":", 2)[0]
		if strings.HasPrefix(src, "/") { // named volumes are not host paths
			sources = append(sources, src)
		}
	}
	for _, m := range req.HostConfig.Mounts {
		if m.Type == "bind" {
			sources = append(sources, m.Source)
		}
	}
	for _, src := range sources {
		ok := false
		for _, d := range dirs {
			rel, err := filepath.Rel(d, filepath.Clean(src))
			if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("bind mount source %s not allowed", src)
		}
	}
	return nil
}
