// Package env holds what the example producer and worker share: the
// task type and queue, and flags whose defaults come from the
// environment (so one image serves docker compose, Kubernetes and a
// plain shell alike).
package env

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
)

// The task type the producer enqueues and the worker handles, and its
// queue: what the example policy grants.
const (
	TaskType = "email:send"
	Queue    = "default"
)

// String is the value of the environment variable name, or def when it
// is unset or empty.
func String(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Int is the integer in the environment variable name, or def.
func Int(name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		fail("%s=%q is not an integer", name, v)
	}
	return n
}

// Bool is the boolean in the environment variable name, or def.
func Bool(name string, def bool) bool {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		fail("%s=%q is not a boolean", name, v)
	}
	return b
}

// Duration is the duration in the environment variable name, or def.
func Duration(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		fail("%s=%q is not a duration", name, v)
	}
	return d
}

// Redis is the connection asynq makes: the proxy's address and this
// program's identity, never Redis's own address or password.
type Redis struct {
	Addr, Username, Password string
}

// Opt is the asynq.RedisClientOpt for r.
func (r Redis) Opt() asynq.RedisClientOpt {
	return asynq.RedisClientOpt{Addr: r.Addr, Username: r.Username, Password: r.Password}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}
