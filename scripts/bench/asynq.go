package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// enqueueScriptSHA is the SHA-1 of asynq's enqueue script (enqueueCmd,
// the same body in v0.23.0 to v0.26.0; docs/asynq-wire.md). The batch
// workload calls it by this SHA after an ordinary asynq enqueue has put
// the script in Redis's script cache.
const enqueueScriptSHA = "98d28b42650870a743450ffda9791e9e19c6991b"

func (t *target) asynqOpt() asynq.RedisClientOpt {
	return asynq.RedisClientOpt{Addr: t.addr, Username: t.user, Password: t.pass}
}

// payload is size bytes: the time of the call as Unix nanoseconds, then
// padding.
func payload(size int) []byte {
	if size < 8 {
		size = 8
	}
	p := make([]byte, size)
	binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	for i := 8; i < size; i++ {
		p[i] = 'x'
	}
	return p
}

// percentile of sorted durations in microseconds (nearest rank).
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Microsecond)
}

func emitLatencies(prefix string, all []time.Duration) {
	slices.Sort(all)
	emit(prefix+"p50_us", percentile(all, 50))
	emit(prefix+"p99_us", percentile(all, 99))
}

type workloadFlags struct {
	t        *target
	n        *int
	c        *int
	size     *int
	queue    *string
	taskType *string
}

func commonFlags(fs *flag.FlagSet, c int) workloadFlags {
	return workloadFlags{
		t:        targetFlags(fs),
		n:        fs.Int("n", 50000, "tasks"),
		c:        fs.Int("c", c, "goroutines (enqueue) or Server concurrency (drain, latency)"),
		size:     fs.Int("size", 256, "payload bytes"),
		queue:    fs.String("queue", "bench", "queue"),
		taskType: fs.String("type", "bench:noop", "task type"),
	}
}

// parallel runs work(i) for i in [0, n) on c goroutines and returns the
// wall time, each call's duration, and the first error.
func parallel(n, c int, work func(i int) error) (time.Duration, []time.Duration, error) {
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var failures int
	lat := make([][]time.Duration, c)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				err := work(i)
				lat[g] = append(lat[g], time.Since(t0))
				if err != nil {
					mu.Lock()
					failures++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		firstErr = fmt.Errorf("%d of %d calls failed, the first with: %w", failures, n, firstErr)
	}
	return elapsed, slices.Concat(lat...), firstErr
}

// runEnqueue: n tasks with asynq.Client.Enqueue from c goroutines.
func runEnqueue(args []string) error {
	fs := flag.NewFlagSet("enqueue", flag.ExitOnError)
	f := commonFlags(fs, 16)
	fs.Parse(args)
	client := asynq.NewClient(f.t.asynqOpt())
	defer client.Close()
	elapsed, lat, err := parallel(*f.n, *f.c, func(int) error {
		_, err := client.Enqueue(asynq.NewTask(*f.taskType, payload(*f.size)), asynq.Queue(*f.queue))
		return err
	})
	if err != nil {
		return err
	}
	emit("tps", float64(*f.n)/elapsed.Seconds())
	emitLatencies("", lat)
	return nil
}

// taskMessage encodes asynq's TaskMessage as asynq.Client.Enqueue does
// for a task without options: type, payload, id, queue, 25 retries, a
// 30-minute timeout.
func taskMessage(typ string, payload []byte, id, queue string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, typ)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, payload)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, id)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, queue)
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	b = protowire.AppendVarint(b, 25)
	b = protowire.AppendTag(b, 8, protowire.VarintType)
	b = protowire.AppendVarint(b, 1800)
	return b
}

// runBatch: n tasks in batches: each of c goroutines sends go-redis
// pipelines of `batch` calls of asynq's enqueue script (EVALSHA, the
// message encoded as asynq encodes it) and waits for the pipeline's
// replies before sending the next. The first task goes through
// asynq.Client.Enqueue, untimed, which registers the queue and loads the
// script.
func runBatch(args []string) error {
	fs := flag.NewFlagSet("batch", flag.ExitOnError)
	f := commonFlags(fs, 16)
	batch := fs.Int("batch", 100, "enqueues per pipeline")
	fs.Parse(args)
	ctx := context.Background()

	client := asynq.NewClient(f.t.asynqOpt())
	_, err := client.Enqueue(asynq.NewTask(*f.taskType, payload(*f.size)), asynq.Queue(*f.queue))
	client.Close()
	if err != nil {
		return fmt.Errorf("warm-up enqueue: %w", err)
	}

	rdb := redis.NewClient(&redis.Options{
		Addr: f.t.addr, Username: f.t.user, Password: f.t.pass, PoolSize: *f.c,
	})
	defer rdb.Close()
	remaining := *f.n - 1
	batches := (remaining + *batch - 1) / *batch
	prefix := "asynq:{" + *f.queue + "}:"
	elapsed, lat, err := parallel(batches, *f.c, func(b int) error {
		size := min(*batch, remaining-b*(*batch))
		pipe := rdb.Pipeline()
		cmds := make([]*redis.Cmd, size)
		for i := range size {
			id := uuid.NewString()
			msg := taskMessage(*f.taskType, payload(*f.size), id, *f.queue)
			cmds[i] = pipe.EvalSha(ctx, enqueueScriptSHA,
				[]string{prefix + "t:" + id, prefix + "pending"},
				msg, id, time.Now().UnixNano())
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		for _, c := range cmds {
			if v, err := c.Int(); err != nil || v != 1 {
				return errors.Join(fmt.Errorf("enqueue script returned %v", v), err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	emit("tps", float64(remaining)/elapsed.Seconds())
	emitLatencies("batch_", lat)
	return nil
}

// runDrain: a Server at concurrency c with a no-op handler until n tasks
// were handled; throughput from Start to the n-th handler.
func runDrain(args []string) error {
	fs := flag.NewFlagSet("drain", flag.ExitOnError)
	f := commonFlags(fs, 10)
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after")
	fs.Parse(args)
	var handled atomic.Int64
	all := make(chan struct{})
	n := int64(*f.n)
	mux := asynq.NewServeMux()
	mux.HandleFunc(*f.taskType, func(context.Context, *asynq.Task) error {
		if handled.Add(1) == n {
			close(all)
		}
		return nil
	})
	srv := asynq.NewServer(f.t.asynqOpt(), asynq.Config{
		Concurrency: *f.c,
		Queues:      map[string]int{*f.queue: 1},
		LogLevel:    asynq.WarnLevel,
	})
	start := time.Now()
	if err := srv.Start(mux); err != nil {
		return err
	}
	defer srv.Shutdown()
	select {
	case <-all:
	case <-time.After(*timeout):
		return fmt.Errorf("%d of %d tasks handled after %s", handled.Load(), n, *timeout)
	}
	emit("tps", float64(n)/time.Since(start).Seconds())
	return nil
}

// runLatency: a Server at concurrency c (polling every millisecond when
// its queue is empty) and a Client enqueuing at a steady rate; each
// handler measures the time since its task's Enqueue call began, which the
// payload carries.
func runLatency(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	f := commonFlags(fs, 10)
	rate := fs.Float64("rate", 500, "enqueues per second")
	duration := fs.Duration("for", 10*time.Second, "how long to enqueue")
	workerUser := fs.String("worker-user", "", "the Server's user name (default: -user)")
	workerPass := fs.String("worker-pass", "", "the Server's password (default: -pass)")
	fs.Parse(args)
	worker := *f.t
	if *workerPass != "" {
		worker.user, worker.pass = *workerUser, *workerPass
	}
	total := int(*rate * duration.Seconds())
	var mu sync.Mutex
	lat := make([]time.Duration, 0, total)
	all := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc(*f.taskType, func(_ context.Context, t *asynq.Task) error {
		now := time.Now()
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(t.Payload())))
		mu.Lock()
		lat = append(lat, now.Sub(sent))
		if len(lat) == total {
			close(all)
		}
		mu.Unlock()
		return nil
	})
	srv := asynq.NewServer(worker.asynqOpt(), asynq.Config{
		Concurrency:       *f.c,
		Queues:            map[string]int{*f.queue: 1},
		LogLevel:          asynq.WarnLevel,
		TaskCheckInterval: time.Millisecond,
	})
	if err := srv.Start(mux); err != nil {
		return err
	}
	defer srv.Shutdown()
	client := asynq.NewClient(f.t.asynqOpt())
	defer client.Close()
	// Connections and scripts in place before the clock starts.
	if err := client.Ping(); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)

	interval := time.Duration(float64(time.Second) / *rate)
	errs := make(chan error, total)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := client.Enqueue(asynq.NewTask(*f.taskType, payload(*f.size)), asynq.Queue(*f.queue))
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("%d of %d tasks handled 30 s after the last enqueue", len(lat), total)
	}
	mu.Lock()
	defer mu.Unlock()
	emit("tasks", float64(total))
	emitLatencies("", lat)
	return nil
}
