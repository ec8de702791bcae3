package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"

	"github.com/hibiken/asynq"
)

// tlsFlags describe how to reach the Redis address over TLS.
type tlsFlags struct {
	ca, cert, key, serverName string
}

// redisOpt is the connection every asynq component of the run uses.
// A TLS setup that cannot be loaded ends the run: nothing would connect.
func redisOpt(cfg config) asynq.RedisClientOpt {
	opt := asynq.RedisClientOpt{
		Addr:     cfg.redisAddr,
		Username: cfg.username,
		Password: cfg.password,
	}
	if cfg.tls.ca != "" {
		tc, err := cfg.tls.load(cfg.redisAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "harness:", err)
			os.Exit(2)
		}
		opt.TLSConfig = tc
	}
	return opt
}

func (t tlsFlags) load(addr string) (*tls.Config, error) {
	pem, err := os.ReadFile(t.ca)
	if err != nil {
		return nil, fmt.Errorf("reading -tls-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-tls-ca %s holds no PEM certificate", t.ca)
	}
	name := t.serverName
	if name == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			name = host
		}
	}
	tc := &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12}
	if t.cert != "" || t.key != "" {
		pair, err := tls.LoadX509KeyPair(t.cert, t.key)
		if err != nil {
			return nil, fmt.Errorf("loading -tls-cert/-tls-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// probe enqueues one task and prints whether asynq accepted it and, if
// not, the error asynq returned, so a test can check what a refused
// client is told.
func probe(cfg config) int {
	client := asynq.NewClient(redisOpt(cfg))
	defer client.Close()
	out := struct {
		OK    bool   `json:"ok"`
		Error string `json:"error,omitempty"`
		ID    string `json:"id,omitempty"`
	}{}
	info, err := client.Enqueue(asynq.NewTask("probe", []byte("probe")), asynq.Queue("probe"))
	if err != nil {
		out.Error = err.Error()
	} else {
		out.OK, out.ID = true, info.ID
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}
