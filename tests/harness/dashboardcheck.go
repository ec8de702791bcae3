package main

// -dashboard-check: every Inspector read and every Inspector mutation,
// once each, with the -username/-password login, and a JSON line with
// each call's outcome:
//
//	{"reads":[{"call":"Queues","ok":true,"error":""},…],"mutations":[…]}
//
// A test uses it to show that a dashboard login can read everything and
// change nothing, and that an operator login can do both. The calls name
// -queue, -task-id, -group and -entry-id; "ok" is simply whether the call
// returned no error, so a read of a missing task fails with asynq's "not
// found" error, not a refusal.
//
// Against a Redis without the proxy, or through a login that may mutate,
// the mutations really happen: the task is run, archived and deleted,
// every task of the queue is moved or deleted, and the queue is deleted.
// Their order does not try to make that harmless; the test this is made
// for expects every one of them to be refused.

import (
	"encoding/json"
	"os"

	"github.com/hibiken/asynq"
)

// call is one Inspector call with its arguments bound.
type call struct {
	name string
	do   func() error
}

type callOutcome struct {
	Call  string `json:"call"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// payloadUpdater is Inspector.UpdateTaskPayload, which only v0.26.0 of the
// pinned versions has; asserting it at run time keeps one source for all.
type payloadUpdater interface {
	UpdateTaskPayload(queue, id string, payload []byte) error
}

// errOf drops a call's result and keeps its error.
func errOf[T any](_ T, err error) error { return err }

// inspectorReads are every read of the Inspector but ClusterKeySlot and
// ClusterNodes, which need Redis Cluster and fail on a single Redis
// whoever asks.
func inspectorReads(insp *asynq.Inspector, cfg config) []call {
	q, id, g := cfg.queue, cfg.taskID, cfg.group
	return []call{
		{"Queues", func() error { return errOf(insp.Queues()) }},
		{"GetQueueInfo", func() error { return errOf(insp.GetQueueInfo(q)) }},
		{"History", func() error { return errOf(insp.History(q, 2)) }},
		{"Groups", func() error { return errOf(insp.Groups(q)) }},
		{"GetTaskInfo", func() error { return errOf(insp.GetTaskInfo(q, id)) }},
		{"ListPendingTasks", func() error { return errOf(insp.ListPendingTasks(q)) }},
		{"ListActiveTasks", func() error { return errOf(insp.ListActiveTasks(q)) }},
		{"ListScheduledTasks", func() error { return errOf(insp.ListScheduledTasks(q)) }},
		{"ListRetryTasks", func() error { return errOf(insp.ListRetryTasks(q)) }},
		{"ListArchivedTasks", func() error { return errOf(insp.ListArchivedTasks(q)) }},
		{"ListCompletedTasks", func() error { return errOf(insp.ListCompletedTasks(q)) }},
		{"ListAggregatingTasks", func() error { return errOf(insp.ListAggregatingTasks(q, g)) }},
		{"Servers", func() error { return errOf(insp.Servers()) }},
		{"SchedulerEntries", func() error { return errOf(insp.SchedulerEntries()) }},
		{"ListSchedulerEnqueueEvents", func() error { return errOf(insp.ListSchedulerEnqueueEvents(cfg.entryID)) }},
	}
}

// inspectorMutations are every Inspector call that changes state. The two
// DeleteQueue calls are told apart as DeleteQueue and DeleteQueueForce.
func inspectorMutations(insp *asynq.Inspector, cfg config) []call {
	q, id, g := cfg.queue, cfg.taskID, cfg.group
	calls := []call{
		{"RunTask", func() error { return insp.RunTask(q, id) }},
		{"ArchiveTask", func() error { return insp.ArchiveTask(q, id) }},
	}
	if u, ok := any(insp).(payloadUpdater); ok {
		calls = append(calls, call{"UpdateTaskPayload", func() error {
			return u.UpdateTaskPayload(q, id, []byte("harness-dashboard-check"))
		}})
	}
	return append(calls, []call{
		{"DeleteTask", func() error { return insp.DeleteTask(q, id) }},
		{"RunAllScheduledTasks", func() error { return errOf(insp.RunAllScheduledTasks(q)) }},
		{"RunAllRetryTasks", func() error { return errOf(insp.RunAllRetryTasks(q)) }},
		{"RunAllArchivedTasks", func() error { return errOf(insp.RunAllArchivedTasks(q)) }},
		{"RunAllAggregatingTasks", func() error { return errOf(insp.RunAllAggregatingTasks(q, g)) }},
		{"ArchiveAllPendingTasks", func() error { return errOf(insp.ArchiveAllPendingTasks(q)) }},
		{"ArchiveAllScheduledTasks", func() error { return errOf(insp.ArchiveAllScheduledTasks(q)) }},
		{"ArchiveAllRetryTasks", func() error { return errOf(insp.ArchiveAllRetryTasks(q)) }},
		{"ArchiveAllAggregatingTasks", func() error { return errOf(insp.ArchiveAllAggregatingTasks(q, g)) }},
		{"DeleteAllPendingTasks", func() error { return errOf(insp.DeleteAllPendingTasks(q)) }},
		{"DeleteAllScheduledTasks", func() error { return errOf(insp.DeleteAllScheduledTasks(q)) }},
		{"DeleteAllRetryTasks", func() error { return errOf(insp.DeleteAllRetryTasks(q)) }},
		{"DeleteAllArchivedTasks", func() error { return errOf(insp.DeleteAllArchivedTasks(q)) }},
		{"DeleteAllCompletedTasks", func() error { return errOf(insp.DeleteAllCompletedTasks(q)) }},
		{"DeleteAllAggregatingTasks", func() error { return errOf(insp.DeleteAllAggregatingTasks(q, g)) }},
		{"PauseQueue", func() error { return insp.PauseQueue(q) }},
		{"UnpauseQueue", func() error { return insp.UnpauseQueue(q) }},
		{"CancelProcessing", func() error { return insp.CancelProcessing(id) }},
		{"DeleteQueue", func() error { return insp.DeleteQueue(q, false) }},
		{"DeleteQueueForce", func() error { return insp.DeleteQueue(q, true) }},
	}...)
}

// runCalls makes the calls in order and records each outcome.
func runCalls(calls []call) []callOutcome {
	out := make([]callOutcome, 0, len(calls))
	for _, c := range calls {
		o := callOutcome{Call: c.name, OK: true}
		if err := c.do(); err != nil {
			o.OK, o.Error = false, err.Error()
		}
		out = append(out, o)
	}
	return out
}

// dashboardCheck makes every read, then every mutation, and prints the
// outcomes. It exits 0 whatever the calls returned, 1 only if printing
// failed.
func dashboardCheck(cfg config) int {
	insp := asynq.NewInspector(redisOpt(cfg, login{cfg.username, cfg.password}))
	defer insp.Close()
	out := struct {
		Reads     []callOutcome `json:"reads"`
		Mutations []callOutcome `json:"mutations"`
	}{}
	// Reads first, so that they see the state before any mutation that
	// gets through.
	out.Reads = runCalls(inspectorReads(insp, cfg))
	out.Mutations = runCalls(inspectorMutations(insp, cfg))
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}
