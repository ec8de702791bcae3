package main

// The plan: which tasks the harness enqueues, with which options, and what
// the server must do with each of them. Everything here is a pure function
// of -tasks, so two runs with the same -tasks expect the same counts.

import (
	"fmt"
	"sort"
	"time"

	"github.com/hibiken/asynq"
)

// kind names one behaviour of the scenario. It doubles as the asynq task
// type, so the server's mux routes each kind to its own handler.
type kind string

const (
	kindPlain           kind = "plain"
	kindScheduled       kind = "scheduled"
	kindUnique          kind = "unique"
	kindUniqueScheduled kind = "unique_scheduled"
	kindGrouped         kind = "grouped"
	kindGroupedUnique   kind = "grouped_unique"
	kindCustomID        kind = "custom_id"
	kindRetryOnce       kind = "retry_once"
	kindRetryHold       kind = "retry_hold"
	kindAlwaysFail      kind = "always_fail"
	kindResult          kind = "result"
	kindLong            kind = "long"
)

// Task types created by the server side rather than by the client.
const (
	typeAggregated = "aggregated"
	typePeriodic   = "periodic"
)

// workQueues are the queues the client fills; periodicQueue is fed only
// by the scheduler, so that its timing-dependent tasks never disturb the
// exact counts expected in the work queues.
var workQueues = []string{"critical", "default", "low"}

const periodicQueue = "periodic"

// Server and retry settings the expectations depend on.
const (
	groupMaxSize     = 20
	alwaysFailRetry  = 2
	uniqueTTL        = 10 * time.Minute
	resultRetention  = 10 * time.Minute
	defaultMaxRetry  = 3
	minTasks         = 300
	groupsPerQueue   = 2
	binaryPayloadEnd = "\x00\r\n\xff" // keeps a proxy honest about binary-safe bulk strings
)

// kindSpec says how tasks of one kind are enqueued and how many times the
// handler must see each of them.
type kindSpec struct {
	perMille    int // share of -tasks; plain takes whatever is left
	min         int // floor so small runs still cover the kind
	maxRetry    int
	invocations int // expected handler calls per task; 0 = consumed by aggregation
	failures    int // how many of those calls fail
	delay       func(i int) time.Duration
	unique      bool
	grouped     bool
	retention   bool
	customID    bool
}

// kindOrder fixes the enqueue order and the order of every listing, so the
// summary does not depend on map iteration.
var kindOrder = []kind{
	kindLong, kindPlain, kindScheduled, kindUnique, kindUniqueScheduled,
	kindGrouped, kindGroupedUnique, kindCustomID, kindRetryOnce,
	kindRetryHold, kindAlwaysFail, kindResult,
}

var kindSpecs = map[kind]kindSpec{
	// Blocks until cancelled; MaxRetry(0) sends it straight to archived.
	kindLong:  {min: 1, maxRetry: 0, invocations: 1, failures: 1},
	kindPlain: {maxRetry: defaultMaxRetry, invocations: 1},
	kindScheduled: {perMille: 80, min: 12, maxRetry: defaultMaxRetry, invocations: 1,
		delay: func(i int) time.Duration { return time.Duration(1+i%3) * time.Second }},
	kindUnique: {perMille: 30, min: 6, maxRetry: defaultMaxRetry, invocations: 1, unique: true},
	kindUniqueScheduled: {perMille: 20, min: 3, maxRetry: defaultMaxRetry, invocations: 1, unique: true,
		delay: func(int) time.Duration { return time.Second }},
	kindGrouped:       {perMille: 80, min: 12, maxRetry: defaultMaxRetry, grouped: true},
	kindGroupedUnique: {perMille: 20, min: 6, maxRetry: defaultMaxRetry, grouped: true, unique: true},
	kindCustomID:      {perMille: 10, min: 3, maxRetry: defaultMaxRetry, invocations: 1, customID: true},
	kindRetryOnce:     {perMille: 30, min: 6, maxRetry: defaultMaxRetry, invocations: 2, failures: 1},
	// Fails once, then waits in the retry set (the server gives it a one
	// hour delay) until the harness runs it through the Inspector.
	kindRetryHold: {perMille: 10, min: 3, maxRetry: defaultMaxRetry, invocations: 2, failures: 1},
	kindAlwaysFail: {perMille: 10, min: 3, maxRetry: alwaysFailRetry,
		invocations: alwaysFailRetry + 1, failures: alwaysFailRetry + 1},
	kindResult: {perMille: 50, min: 6, maxRetry: defaultMaxRetry, invocations: 1, retention: true},
}

// plannedTask is one task the client enqueues; id and notBefore are filled
// in by the enqueue phase.
type plannedTask struct {
	kind    kind
	index   int // index within its kind
	queue   string
	group   string
	payload []byte
	delay   time.Duration

	id        string
	notBefore time.Time // earliest moment the server may run it
}

func (t *plannedTask) spec() kindSpec { return kindSpecs[t.kind] }

// newTask builds the asynq task with every option of its kind.
func (t *plannedTask) newTask() *asynq.Task {
	spec := t.spec()
	opts := []asynq.Option{asynq.Queue(t.queue), asynq.MaxRetry(spec.maxRetry)}
	if t.delay > 0 {
		opts = append(opts, asynq.ProcessIn(t.delay))
	}
	if spec.unique {
		opts = append(opts, asynq.Unique(uniqueTTL))
	}
	if t.group != "" {
		opts = append(opts, asynq.Group(t.group))
	}
	if spec.retention {
		opts = append(opts, asynq.Retention(resultRetention))
	}
	if spec.customID {
		opts = append(opts, asynq.TaskID(fmt.Sprintf("harness-custom-%05d", t.index)))
	}
	return asynq.NewTask(string(t.kind), t.payload, opts...)
}

// expectedState is the state asynq reports right after the enqueue.
func (t *plannedTask) expectedState() asynq.TaskState {
	switch {
	case t.delay > 0:
		return asynq.TaskStateScheduled
	case t.group != "":
		return asynq.TaskStateAggregating
	default:
		return asynq.TaskStatePending
	}
}

// expectedResult is what the result handler writes for a payload; the
// binary tail of the payload makes it binary as well.
func expectedResult(payload []byte) []byte {
	return append([]byte("result:"), payload...)
}

// kindCounts decides how many tasks of each kind a run of n tasks has.
func kindCounts(n int) map[kind]int {
	counts := make(map[kind]int)
	rest := n
	for _, k := range kindOrder {
		if k == kindPlain {
			continue
		}
		spec := kindSpecs[k]
		c := n * spec.perMille / 1000
		if c < spec.min {
			c = spec.min
		}
		counts[k] = c
		rest -= c
	}
	counts[kindPlain] = rest
	return counts
}

// buildPlan lays out every task. Queues rotate by index within a kind so
// that each queue gets every kind; the long task always goes to
// "critical", where the cancel check looks for it.
func buildPlan(n int) []*plannedTask {
	counts := kindCounts(n)
	var plan []*plannedTask
	for _, k := range kindOrder {
		spec := kindSpecs[k]
		for i := 0; i < counts[k]; i++ {
			t := &plannedTask{
				kind:    k,
				index:   i,
				queue:   workQueues[i%len(workQueues)],
				payload: []byte(fmt.Sprintf("%s-%05d%s", k, i, binaryPayloadEnd)),
			}
			if k == kindLong {
				t.queue = "critical"
			}
			if spec.delay != nil {
				t.delay = spec.delay(i)
			}
			if spec.grouped {
				t.group = fmt.Sprintf("g%d", i%groupsPerQueue)
			}
			plan = append(plan, t)
		}
	}
	return plan
}

// byKind returns the planned tasks of one kind, in plan order.
func byKind(plan []*plannedTask, k kind) []*plannedTask {
	var out []*plannedTask
	for _, t := range plan {
		if t.kind == k {
			out = append(out, t)
		}
	}
	return out
}

// groupKey identifies a group; asynq groups are scoped to a queue.
type groupKey struct{ queue, group string }

// groupSizes counts the grouped tasks of each (queue, group).
func groupSizes(plan []*plannedTask) map[groupKey]int {
	sizes := make(map[groupKey]int)
	for _, t := range plan {
		if t.group != "" {
			sizes[groupKey{t.queue, t.group}]++
		}
	}
	return sizes
}

// expectedBatches is how many aggregated tasks the server must produce.
// Every aggregation check takes min(size, GroupMaxSize) tasks whichever
// rule fires (size, max delay or grace period), and all grouped tasks are
// in Redis before the server starts, so the count does not depend on
// timing.
func expectedBatches(plan []*plannedTask) map[string]int {
	batches := make(map[string]int)
	for key, size := range groupSizes(plan) {
		batches[key.queue] += (size + groupMaxSize - 1) / groupMaxSize
	}
	return batches
}

// sortedKeys returns a map's keys in order, for stable output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
