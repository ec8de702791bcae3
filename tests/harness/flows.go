package main

// Phase 4: the parts of the scenario that need a running server. Each
// waits by polling with a bound, so a broken path fails its check instead
// of hanging the run; the overall -timeout bounds them all.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

const (
	pollEvery = 100 * time.Millisecond
	// The server writes its state (with its workers) every 5 s, starting
	// at once; a worker shows up at the first beat after its task starts.
	workerVisibleWithin = 15 * time.Second
	cancelWait          = 2 * time.Second
	cancelAttempts      = 5
	heldRetriesWithin   = 60 * time.Second
	// The scheduler's first heartbeat comes 5 s (v0.24) or 10 s (v0.25+)
	// after its start.
	schedulerWithin = 30 * time.Second
)

// poll calls done every pollEvery until it returns true, limit passes or
// ctx ends; it reports whether done returned true.
func poll(ctx context.Context, limit time.Duration, done func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if done() {
			return true
		}
		select {
		case <-ctx.Done():
			return done()
		case <-tick.C:
		}
	}
}

// cancelLongTask waits for the long task to be visible as an active
// worker, then cancels it through the Inspector (PUBLISH on asynq:cancel)
// and checks that its handler saw the cancellation.
func (sc *scenario) cancelLongTask(ctx context.Context) {
	long := byKind(sc.plan, kindLong)[0]
	select {
	case id := <-sc.rec.longStarted:
		expectEqual(sc.rep, "long_task_id", id, long.id)
	case <-time.After(workerVisibleWithin):
		sc.rep.failf("long_task_started", "handler not called within %v", workerVisibleWithin)
		return
	}

	sc.findWorker(ctx, long)
	sc.checkActiveListing(long)
	sc.cancelAndWait(long)
}

// findWorker polls Servers() until one of our servers lists the long task
// as one of its active workers and every server started is listed. Every
// server writes its state as it starts, and the worker appears only a beat
// later, so waiting for all of them costs nothing.
func (sc *scenario) findWorker(ctx context.Context, long *plannedTask) {
	var lastErr error
	var servers []*asynq.ServerInfo
	var holder *asynq.ServerInfo
	var worker *asynq.WorkerInfo
	poll(ctx, workerVisibleWithin, func() bool {
		list, err := sc.insp.Servers()
		lastErr = err
		if err != nil {
			return false
		}
		servers = list
		holder, worker = workerOf(list, long.id)
		return worker != nil && len(list) >= len(sc.srvs)
	})
	sc.sum.WorkersSeen = worker != nil
	sc.sum.Timing.WorkerSeenAfterMS = time.Since(sc.serverStarted).Milliseconds()
	if sc.rep.expect(worker != nil, "workers_seen",
		"long task not among active workers (last error %v)", lastErr) {
		sc.checkWorker(holder, worker, long)
	}
	sc.checkServerList(servers)
}

// workerOf finds the server and worker running the task with this id.
func workerOf(servers []*asynq.ServerInfo, id string) (*asynq.ServerInfo, *asynq.WorkerInfo) {
	for _, s := range servers {
		for _, w := range s.ActiveWorkers {
			if w.TaskID == id {
				return s, w
			}
		}
	}
	return nil, nil
}

// checkWorker compares what the heartbeat stored with what was enqueued
// (the worker record embeds the task payload), and expects the task on
// the server that was started for its queue.
func (sc *scenario) checkWorker(s *asynq.ServerInfo, w *asynq.WorkerInfo, long *plannedTask) {
	ok := w.TaskType == string(kindLong) && w.Queue == long.queue &&
		string(w.TaskPayload) == string(long.payload)
	sc.rep.expect(ok, "worker_info", "type %q queue %q, payload match %v",
		w.TaskType, w.Queue, string(w.TaskPayload) == string(long.payload))
	want := ""
	for _, p := range sc.srvFor {
		if _, ok := p.queues[long.queue]; ok {
			want = queueSet(p.queues)
		}
	}
	ok = s.Concurrency == serverConcurrency && queueSet(s.Queues) == want && s.Status == "active"
	sc.rep.expect(ok, "server_info", "concurrency %d queues %v status %q, want queues %s",
		s.Concurrency, s.Queues, s.Status, want)
}

// checkServerList expects Servers() to list exactly the servers started:
// each of this process, active, with the configured concurrency, and
// with the queues and priorities it was started with.
func (sc *scenario) checkServerList(servers []*asynq.ServerInfo) {
	want := map[string]int{} // queue set → servers started with it
	for _, p := range sc.srvFor {
		want[queueSet(p.queues)]++
	}
	got := map[string]int{}
	ok := true
	for _, s := range servers {
		got[queueSet(s.Queues)]++
		if s.PID != os.Getpid() || s.Concurrency != serverConcurrency || s.Status != "active" {
			ok = false
			sc.rep.failf("servers_listed", "server %s: pid %d concurrency %d status %q",
				s.ID, s.PID, s.Concurrency, s.Status)
		}
	}
	ok = ok && maps.Equal(got, want)
	sc.sum.ServersListed = ok
	sc.rep.expect(maps.Equal(got, want), "servers_listed", "listed %v, started %v", got, want)
}

// queueSet renders a server's queues and priorities in a fixed order.
func queueSet(queues map[string]int) string {
	parts := make([]string, 0, len(queues))
	for _, q := range sortedKeys(queues) {
		parts = append(parts, fmt.Sprintf("%s:%d", q, queues[q]))
	}
	return strings.Join(parts, ",")
}

// checkActiveListing expects the long task in its queue's active list.
func (sc *scenario) checkActiveListing(long *plannedTask) {
	infos, err := listAll(func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) {
		return sc.insp.ListActiveTasks(long.queue, o...)
	})
	if !sc.rep.expect(err == nil, "active_listed", "%v", err) {
		return
	}
	sc.sum.ActiveListed = idsOfInfos(infos)[long.id]
	sc.rep.expect(sc.sum.ActiveListed, "active_listed", "long task not in %q active list", long.queue)
}

// cancelAndWait publishes the cancellation, re-sending it a few times:
// a PUBLISH that arrives before the server's subscription is live is lost,
// and re-sending is what a careful operator would do too.
func (sc *scenario) cancelAndWait(long *plannedTask) {
	for attempt := 0; attempt < cancelAttempts; attempt++ {
		sc.sum.Timing.CancelPublishes++
		if err := sc.ops.CancelProcessing(long.id); err != nil {
			sc.rep.failf("cancel", "CancelProcessing: %v", err)
			return
		}
		select {
		case err := <-sc.rec.longDone:
			sc.sum.Cancelled = errors.Is(err, context.Canceled)
			sc.rep.expect(sc.sum.Cancelled, "cancelled", "handler ended with %v", err)
			return
		case <-time.After(cancelWait):
		}
	}
	sc.rep.failf("cancelled", "handler saw no cancellation after %d publishes", cancelAttempts)
}

// runHeldRetries waits for every retry_hold task to sit in a retry list,
// checks what the Inspector says about them, and runs them at once.
func (sc *scenario) runHeldRetries(ctx context.Context) {
	held := byKind(sc.plan, kindRetryHold)
	var infos []*asynq.TaskInfo
	poll(ctx, heldRetriesWithin, func() bool {
		infos = sc.listRetryOf(kindRetryHold)
		return len(infos) >= len(held)
	})
	sc.sum.RetryListed = len(infos)
	expectEqual(sc.rep, "retry_listed", len(infos), len(held))

	for _, info := range infos {
		ok := info.State == asynq.TaskStateRetry && info.Retried == 1 && info.LastErr == errPlanned.Error()
		sc.rep.expect(ok, "retry_info", "%s: state %v retried %d last error %q",
			info.ID, info.State, info.Retried, info.LastErr)
		if err := sc.ops.RunTask(info.Queue, info.ID); err != nil {
			sc.rep.failf("retry_run", "%s: %v", info.ID, err)
			continue
		}
		sc.sum.RetryRun++
	}
}

// listRetryOf lists the retry sets of all work queues, keeping one kind;
// other kinds pass through the retry sets briefly at the same time.
func (sc *scenario) listRetryOf(k kind) []*asynq.TaskInfo {
	var out []*asynq.TaskInfo
	for _, q := range workQueues {
		infos, err := listAll(func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) {
			return sc.insp.ListRetryTasks(q, o...)
		})
		if err != nil {
			sc.rep.failf("list_retry_"+q, "%v", err)
			continue
		}
		for _, info := range infos {
			if info.Type == string(k) {
				out = append(out, info)
			}
		}
	}
	return out
}

// watchScheduler waits until the periodic task ran and SchedulerEntries
// lists our entry, then checks its enqueue history.
func (sc *scenario) watchScheduler(ctx context.Context) {
	listed := poll(ctx, schedulerWithin, func() bool {
		if !sc.sum.SchedulerEntryListed {
			sc.sum.SchedulerEntryListed = sc.entryListed()
		}
		return sc.sum.SchedulerEntryListed && sc.rec.periodicCount() > 0
	})
	sc.sum.Timing.EntryListedAfterMS = time.Since(sc.schedulerStart).Milliseconds()
	sc.sum.SchedulerRan = sc.rec.periodicCount() > 0
	sc.rep.expect(sc.sum.SchedulerRan, "scheduler_ran", "periodic handler never called")
	sc.rep.expect(sc.sum.SchedulerEntryListed, "scheduler_entry_listed",
		"entry %s not in SchedulerEntries", sc.entryID)
	if !listed {
		return
	}

	events, err := sc.insp.ListSchedulerEnqueueEvents(sc.entryID)
	sc.sum.SchedulerEventsListed = err == nil && len(events) > 0
	sc.rep.expect(sc.sum.SchedulerEventsListed, "scheduler_events_listed",
		"%d events, error %v", len(events), err)
}

func (sc *scenario) entryListed() bool {
	entries, err := sc.insp.SchedulerEntries()
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.ID == sc.entryID && e.Spec == periodicSpec && e.Task != nil && e.Task.Type() == typePeriodic {
			return true
		}
	}
	return false
}

// waitSettled waits until every handler ran as often as planned and no
// work queue holds a task that can still move. It does not compare the
// terminal counts (archived, completed, processed): a wrong one would only
// make it wait for the timeout, so checkFinalState reports those instead.
func (sc *scenario) waitSettled(ctx context.Context) {
	settled := poll(ctx, sc.cfg.timeout, func() bool {
		if !sc.rec.complete(sc.plan) {
			return false
		}
		for _, q := range workQueues {
			info, err := sc.insp.GetQueueInfo(q)
			if err != nil || !idle(info) {
				return false
			}
		}
		return true
	})
	sc.rep.expect(settled, "settled", "queues did not settle before the timeout")
}

// idle reports whether a queue holds only terminal tasks. A task leaves
// "active" in the same script that counts it as processed, so an idle
// queue's counters are final too.
func idle(q *asynq.QueueInfo) bool {
	return q.Pending == 0 && q.Active == 0 && q.Scheduled == 0 &&
		q.Retry == 0 && q.Aggregating == 0 && q.Groups == 0
}
