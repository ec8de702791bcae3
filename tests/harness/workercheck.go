package main

// -worker-check: one Server on the -worker-queues for -worker-for, then a
// JSON line saying what it processed per queue and what asynq logged as
// errors. A Server never returns its Redis errors to the caller; it logs
// them (a refused dequeue as "Dequeue error: …") and carries on, so the
// log is the only place a refusal shows up.
//
// Output: {"processed":{"A":n,"B":m},"dequeue_errors":k,"errors":e,
// "first_error":"…","start_error":"…"}. errors counts every Error line,
// dequeue_errors those about dequeueing; first_error is the first Error
// line of any kind. asynq rate-limits its dequeue errors to one per 3 s,
// so counts say "some" or "none", not how many calls failed.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

const workerCheckConcurrency = 4

type workerCheckReport struct {
	Processed     map[string]int `json:"processed"`
	DequeueErrors int            `json:"dequeue_errors"`
	Errors        int            `json:"errors"`
	FirstError    string         `json:"first_error"`
	StartError    string         `json:"start_error"`
}

// countingLogger counts and keeps the Error lines asynq logs, and passes
// warnings and errors on to stderr unless -quiet.
type countingLogger struct {
	quiet bool

	mu            sync.Mutex
	errors        int
	dequeueErrors int
	first         string
}

func (l *countingLogger) Debug(args ...interface{}) {}
func (l *countingLogger) Info(args ...interface{})  {}

func (l *countingLogger) Warn(args ...interface{}) {
	l.print("warn", args)
}

func (l *countingLogger) Error(args ...interface{}) {
	text := fmt.Sprint(args...)
	l.mu.Lock()
	l.errors++
	if strings.Contains(text, "Dequeue error") {
		l.dequeueErrors++
	}
	if l.errors == 1 {
		l.first = text
	}
	l.mu.Unlock()
	l.print("error", args)
}

func (l *countingLogger) Fatal(args ...interface{}) {
	fmt.Fprintln(os.Stderr, append([]interface{}{"asynq: fatal:"}, args...)...)
	os.Exit(1)
}

func (l *countingLogger) print(level string, args []interface{}) {
	if !l.quiet {
		fmt.Fprintln(os.Stderr, append([]interface{}{"asynq: " + level + ":"}, args...)...)
	}
}

// workerCheck runs the Server, prints the report and returns the exit
// status: 0 whatever the Server met, 1 only if printing failed.
func workerCheck(cfg config) int {
	out := workerCheckReport{Processed: map[string]int{}}
	queues := map[string]int{}
	for _, q := range cfg.workerQueues {
		queues[q] = 1
		out.Processed[q] = 0
	}
	var mu sync.Mutex
	count := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		q, _ := asynq.GetQueueName(ctx)
		mu.Lock()
		out.Processed[q]++
		mu.Unlock()
		return nil
	})

	logger := &countingLogger{quiet: cfg.quiet}
	srv := asynq.NewServer(redisOpt(cfg, login{cfg.username, cfg.password}), asynq.Config{
		Concurrency:     workerCheckConcurrency,
		Queues:          queues,
		ShutdownTimeout: shutdownTimeout,
		Logger:          logger,
		LogLevel:        asynq.WarnLevel,
	})
	if err := srv.Start(count); err != nil {
		out.StartError = err.Error()
	} else {
		time.Sleep(cfg.workerFor)
		srv.Shutdown()
	}

	logger.mu.Lock()
	out.Errors, out.DequeueErrors, out.FirstError = logger.errors, logger.dequeueErrors, logger.first
	logger.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}
