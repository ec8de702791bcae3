package main

// -flood: enqueue at a steady rate for a while and count what the proxy
// admitted and what it refused with -LIMIT, so a test can hold a rate
// limit to its configured rate with real asynq. Every attempt is either
// accepted, limited or another error; the three add up to attempted.

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

type floodResult struct {
	Attempted       int    `json:"attempted"`
	Accepted        int    `json:"accepted"`
	Limited         int    `json:"limited"`
	OtherErrors     int    `json:"other_errors"`
	FirstLimitError string `json:"first_limit_error,omitempty"`
	FirstOtherError string `json:"first_other_error,omitempty"`
}

// flood enqueues tasks of -flood-type to -flood-queue at -flood-rate per
// second for -flood-for, from -flood-producers goroutines sharing one
// Client (as an application's request handlers would), and prints the
// counts as JSON.
func flood(cfg config) int {
	client := asynq.NewClient(redisOpt(cfg, login{cfg.username, cfg.password}))
	defer client.Close()

	ticks := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), cfg.floodFor)
	defer cancel()
	go func() {
		defer close(ticks)
		interval := time.Duration(float64(time.Second) / cfg.floodRate)
		next := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(next)):
			}
			select {
			case ticks <- struct{}{}:
			case <-ctx.Done():
				return
			}
			next = next.Add(interval)
		}
	}()

	var mu sync.Mutex
	var res floodResult
	var wg sync.WaitGroup
	for p := 0; p < cfg.floodProducers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ticks {
				_, err := client.Enqueue(asynq.NewTask(cfg.floodType, []byte("flood")), asynq.Queue(cfg.floodQueue))
				mu.Lock()
				res.count(err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

func (r *floodResult) count(err error) {
	r.Attempted++
	switch {
	case err == nil:
		r.Accepted++
	case strings.Contains(err.Error(), "LIMIT asynq-guard"):
		r.Limited++
		if r.FirstLimitError == "" {
			r.FirstLimitError = err.Error()
		}
	default:
		r.OtherErrors++
		if r.FirstOtherError == "" {
			r.FirstOtherError = err.Error()
		}
	}
}
