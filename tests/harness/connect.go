package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"

	"github.com/hibiken/asynq"
)

// tlsFlags describe how to reach the Redis address over TLS.
type tlsFlags struct {
	ca, cert, key, serverName string
}

// redisOpt is a connection to the -redis address, over TLS when asked,
// logged in as l. A TLS setup that cannot be loaded ends the run: nothing
// would connect.
func redisOpt(cfg config, l login) asynq.RedisClientOpt {
	opt := asynq.RedisClientOpt{
		Addr:     cfg.redisAddr,
		Username: l.Username,
		Password: l.Password,
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
