// Command verify-worker runs an asynq Server whose handlers sit behind
// asynqguard.VerifyMiddleware, counting the tasks it handles and the tasks
// the middleware rejects. asynq-guard's integration tests use it as a
// worker that verifies tasks end to end.
//
// Usage:
//
//	ASYNQ_GUARD_KEY=... verify-worker -addr 127.0.0.1:6380 -queue default \
//	    -key-id k1 -key-env ASYNQ_GUARD_KEY -expect 10 -timeout-secs 30
//
// It stops once -expect tasks were handled or -timeout-secs elapsed,
// whichever comes first (with -expect 0 it runs until the timeout), prints one line {"handled":N,"rejected":N} and
// exits 0. Tasks that the middleware rejects are counted (and reported on
// stderr) if they were processed before the worker stopped. Bad flags, keys
// or a server that cannot start exit 2.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asynq-guard/asynq-guard/sdk/go/asynqguard"
)

// counts is the output line.
type counts struct {
	Handled  int `json:"handled"`
	Rejected int `json:"rejected"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "Redis (or asynq-guard) address host:port")
	username := flag.String("username", "", "Redis ACL user name")
	password := flag.String("password", "", "Redis password")
	queue := flag.String("queue", "default", "queue to process")
	keyID := flag.String("key-id", "", "id of the verifying key (none: a plain worker, no middleware)")
	keyEnv := flag.String("key-env", "", "environment variable holding the key secret")
	expect := flag.Int("expect", 1, "stop after this many tasks were handled (0: run until the timeout)")
	timeoutSecs := flag.Int("timeout-secs", 30, "stop after this many seconds")
	flag.Parse()

	if (*keyID == "") != (*keyEnv == "") {
		fail("-key-id and -key-env go together")
	}

	var (
		mu   sync.Mutex
		c    counts
		done = make(chan struct{})
		once sync.Once
	)
	// The handler accepts every task type; in front of it the verifier,
	// and outermost a counter of what the verifier rejects.
	handler := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		mu.Lock()
		c.Handled++
		reached := *expect > 0 && c.Handled >= *expect
		mu.Unlock()
		if reached {
			once.Do(func() { close(done) })
		}
		return nil
	})
	var verified asynq.Handler = handler
	if *keyID != "" {
		key, err := asynqguard.KeyFromEnv(*keyID, *keyEnv)
		if err != nil {
			fail(err.Error())
		}
		verifier, err := asynqguard.NewVerifier(key)
		if err != nil {
			fail(err.Error())
		}
		verified = verifier.Middleware()(handler)
	}
	counted := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		err := verified.ProcessTask(ctx, t)
		if errors.Is(err, asynqguard.ErrRejected) {
			fmt.Fprintln(os.Stderr, "verify-worker:", err)
			mu.Lock()
			c.Rejected++
			mu.Unlock()
		}
		return err
	})

	srv := asynq.NewServer(
		asynq.RedisClientOpt{Addr: *addr, Username: *username, Password: *password},
		asynq.Config{
			Concurrency: 4,
			Queues:      map[string]int{*queue: 1},
			LogLevel:    asynq.WarnLevel,
		},
	)
	if err := srv.Start(counted); err != nil {
		fail(err.Error())
	}
	select {
	case <-done:
	case <-time.After(time.Duration(*timeoutSecs) * time.Second):
	}
	srv.Shutdown()

	mu.Lock()
	line, _ := json.Marshal(c)
	mu.Unlock()
	fmt.Println(string(line))
}

// fail reports a usage or setup error and exits 2.
func fail(msg string) {
	fmt.Fprintln(os.Stderr, "verify-worker:", msg)
	os.Exit(2)
}
