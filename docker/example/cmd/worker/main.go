// Command worker runs an asynq.Server on the queue "default" through
// asynq-guard and handles email:send tasks (it only counts them).
//
// Every flag has an environment variable as its default:
//
//	-addr              REDIS_ADDR        the proxy (default asynq-guard:6380)
//	-username          REDIS_USERNAME    identity (default worker)
//	-password          REDIS_PASSWORD    the identity's secret
//	-count             TASKS             tasks expected (default 20)
//	-exit-after-count  EXIT_AFTER_COUNT  exit 0 once -count distinct tasks were
//	                                     handled (default false: run until SIGTERM)
//	-timeout           WORKER_TIMEOUT    with -exit-after-count: exit 1 if the
//	                                     tasks have not all come by then (0: wait forever)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"asynq-guard/example/internal/env"
)

// handled counts distinct task ids, so a task delivered twice (a lease
// that ran out, say) is counted once.
type handled struct {
	mu   sync.Mutex
	seen map[string]bool
	want int
	done chan struct{}
}

func (h *handled) add(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen[id] {
		return
	}
	h.seen[id] = true
	if len(h.seen) == h.want {
		close(h.done)
	}
}

func (h *handled) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}

func main() {
	var r env.Redis
	flag.StringVar(&r.Addr, "addr", env.String("REDIS_ADDR", "asynq-guard:6380"), "asynq-guard address")
	flag.StringVar(&r.Username, "username", env.String("REDIS_USERNAME", "worker"), "identity")
	flag.StringVar(&r.Password, "password", env.String("REDIS_PASSWORD", ""), "the identity's secret")
	count := flag.Int("count", env.Int("TASKS", 20), "tasks expected")
	exitAfter := flag.Bool("exit-after-count", env.Bool("EXIT_AFTER_COUNT", false), "exit once -count tasks were handled")
	timeout := flag.Duration("timeout", env.Duration("WORKER_TIMEOUT", 0), "with -exit-after-count: give up after this long")
	flag.Parse()

	h := &handled{seen: map[string]bool{}, want: *count, done: make(chan struct{})}
	if *count <= 0 {
		close(h.done)
	}
	mux := asynq.NewServeMux()
	mux.HandleFunc(env.TaskType, func(ctx context.Context, t *asynq.Task) error {
		var e struct {
			To string `json:"to"`
		}
		if err := json.Unmarshal(t.Payload(), &e); err != nil || e.To == "" {
			// A payload that is not an e-mail goes to the archive, not back in the queue.
			return fmt.Errorf("bad payload %q: %w", t.Payload(), asynq.SkipRetry)
		}
		id, _ := asynq.GetTaskID(ctx)
		h.add(id)
		return nil
	})

	srv := asynq.NewServer(r.Opt(), asynq.Config{
		Queues:      map[string]int{env.Queue: 1},
		Concurrency: 4,
		LogLevel:    asynq.WarnLevel,
	})
	if err := srv.Start(mux); err != nil {
		log.Fatalf("worker: %v", err)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var deadline <-chan time.Time
	finished := h.done
	if !*exitAfter {
		finished = nil
	} else if *timeout > 0 {
		deadline = time.After(*timeout)
	}
	status := 0
	select {
	case <-finished:
	case <-stop:
	case <-deadline:
		status = 1
		fmt.Fprintf(os.Stderr, "worker: only %d of %d tasks within %s\n", h.count(), *count, *timeout)
	}
	srv.Shutdown()
	fmt.Printf("worker: processed %d %s tasks from queue %s\n", h.count(), env.TaskType, env.Queue)
	os.Exit(status)
}
