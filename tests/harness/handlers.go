package main

// Handlers and the recorder they report to. Each handler behaves in a
// fixed, deterministic way for its kind (succeed, fail once, always fail,
// write a result, block until cancelled), and records every invocation by
// the task id asynq puts in the context.

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

// errPlanned is what the failing handlers return; the archived tasks'
// last error must carry it.
var errPlanned = errors.New("planned failure")

type recorder struct {
	mu         sync.Mutex
	calls      map[string]int       // task id → invocations
	firstAt    map[string]time.Time // task id → first invocation
	groupedIn  map[string]int       // grouped payload → aggregated tasks holding it
	aggregated map[string]int       // aggregated task id → invocations
	aggQueue   map[string]string    // aggregated task id → its queue
	periodic   int
	problems   []string // handler-side anomalies, turned into failures later

	longStarted chan string   // the long task's id, once it runs
	longDone    chan error    // why the long handler returned
	release     chan struct{} // closed at shutdown so the long handler never hangs it
}

func newRecorder() *recorder {
	return &recorder{
		calls:       map[string]int{},
		firstAt:     map[string]time.Time{},
		groupedIn:   map[string]int{},
		aggregated:  map[string]int{},
		aggQueue:    map[string]string{},
		longStarted: make(chan string, 1),
		longDone:    make(chan error, 1),
		release:     make(chan struct{}),
	}
}

// mux routes every task type to its handler.
func (rec *recorder) mux() *asynq.ServeMux {
	mux := asynq.NewServeMux()
	for _, k := range []kind{kindPlain, kindScheduled, kindUnique, kindUniqueScheduled, kindCustomID} {
		mux.HandleFunc(string(k), rec.succeed)
	}
	mux.HandleFunc(string(kindRetryOnce), rec.failFirst)
	mux.HandleFunc(string(kindRetryHold), rec.failFirst)
	mux.HandleFunc(string(kindAlwaysFail), rec.alwaysFail)
	mux.HandleFunc(string(kindResult), rec.writeResult)
	mux.HandleFunc(string(kindLong), rec.blockUntilCancelled)
	mux.HandleFunc(typeAggregated, rec.aggregatedTask)
	mux.HandleFunc(typePeriodic, rec.periodicTick)
	// Grouped tasks must reach handlers only inside an aggregated task; a
	// direct call means grouping was lost on the way.
	mux.HandleFunc(string(kindGrouped), rec.succeed)
	mux.HandleFunc(string(kindGroupedUnique), rec.succeed)
	return mux
}

// record counts one invocation of the task in ctx and returns its id.
func (rec *recorder) record(ctx context.Context) string {
	id, ok := asynq.GetTaskID(ctx)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !ok {
		rec.problems = append(rec.problems, "handler context carried no task id")
		return ""
	}
	if rec.calls[id] == 0 {
		rec.firstAt[id] = time.Now()
	}
	rec.calls[id]++
	return id
}

func (rec *recorder) problem(msg string) {
	rec.mu.Lock()
	rec.problems = append(rec.problems, msg)
	rec.mu.Unlock()
}

func (rec *recorder) succeed(ctx context.Context, t *asynq.Task) error {
	rec.record(ctx)
	return nil
}

// failFirst fails the first attempt only. It asks asynq for the retry
// count rather than keeping its own state, so the count asynq stored in
// the message is what decides.
func (rec *recorder) failFirst(ctx context.Context, t *asynq.Task) error {
	rec.record(ctx)
	if n, _ := asynq.GetRetryCount(ctx); n == 0 {
		return errPlanned
	}
	return nil
}

func (rec *recorder) alwaysFail(ctx context.Context, t *asynq.Task) error {
	rec.record(ctx)
	return errPlanned
}

// writeResult stores a result derived from the payload; the harness reads
// it back through the Inspector after the task completed.
func (rec *recorder) writeResult(ctx context.Context, t *asynq.Task) error {
	rec.record(ctx)
	want := expectedResult(t.Payload())
	n, err := t.ResultWriter().Write(want)
	if err != nil {
		return err
	}
	if n != len(want) {
		rec.problem("result writer reported a short write")
	}
	return nil
}

// blockUntilCancelled waits for Inspector.CancelProcessing to cancel the
// context. It returns the context error either way, because asynq may
// notice the cancellation before the handler returns: returning an error
// keeps the outcome (archived, as MaxRetry is 0) the same in both orders.
func (rec *recorder) blockUntilCancelled(ctx context.Context, t *asynq.Task) error {
	id := rec.record(ctx)
	select {
	case rec.longStarted <- id:
	default:
	}

	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-rec.release:
		err = errors.New("released at shutdown without cancellation")
	}
	select {
	case rec.longDone <- err:
	default:
	}
	return err
}

// aggregatedTask notes which grouped payloads this aggregated task holds.
func (rec *recorder) aggregatedTask(ctx context.Context, t *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	payloads, err := decodeBatch(t.Payload())
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if err != nil {
		rec.problems = append(rec.problems, "aggregated payload: "+err.Error())
		return nil // retrying would not make the payload readable
	}
	rec.aggregated[id]++
	rec.aggQueue[id] = queue
	if rec.aggregated[id] > 1 {
		return nil // count each grouped payload once per aggregated task
	}
	for _, p := range payloads {
		rec.groupedIn[string(p)]++
	}
	return nil
}

func (rec *recorder) periodicTick(ctx context.Context, t *asynq.Task) error {
	rec.mu.Lock()
	rec.periodic++
	rec.mu.Unlock()
	return nil
}

// callsOf returns the invocation count of one task id.
func (rec *recorder) callsOf(id string) int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.calls[id]
}

func (rec *recorder) periodicCount() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.periodic
}

// complete reports whether every planned task reached its expected number
// of invocations and every grouped payload arrived in an aggregated task.
func (rec *recorder) complete(plan []*plannedTask) bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, t := range plan {
		if t.group != "" {
			if rec.groupedIn[string(t.payload)] == 0 {
				return false
			}
		} else if rec.calls[t.id] < t.spec().invocations {
			return false
		}
	}
	return true
}
