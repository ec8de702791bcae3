package main

// Phase 5: once the queues have settled, compare what happened with the
// plan: handler invocations from the recorder, and the terminal state of
// every queue through the Inspector.

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// groupedGoneWithin covers the short gap between the aggregated task being
// handled and the aggregator deleting the group's original tasks.
const groupedGoneWithin = 5 * time.Second

func (sc *scenario) checkFinalState() {
	sc.checkInvocations()
	sc.checkAggregation()
	for _, q := range workQueues {
		sc.checkArchived(q)
		sc.checkCompleted(q)
		sc.checkFinalQueue(q)
	}
	sc.checkCancelledTask()
	sc.checkFinalQueueList()
}

// checkInvocations compares each task's handler calls with its kind.
func (sc *scenario) checkInvocations() {
	planned := map[string]bool{}
	for _, t := range sc.plan {
		planned[t.id] = true
		calls := sc.rec.callsOf(t.id)
		sc.sum.HandlerInvocations[string(t.kind)] += calls
		if calls > 0 {
			sc.sum.HandledIDs++
		}
		sc.rep.expect(calls == t.spec().invocations, "invocations_"+string(t.kind),
			"task %s (#%d in %q) handled %d times, want %d",
			t.id, t.index, t.queue, calls, t.spec().invocations)
		sc.checkOnTime(t)
	}

	sc.rec.mu.Lock()
	defer sc.rec.mu.Unlock()
	for id := range sc.rec.calls {
		sc.rep.expect(planned[id], "unplanned_task", "handler saw unknown task %s", id)
	}
	for _, p := range sc.rec.problems {
		sc.rep.failf("handler", "%s", p)
	}
}

// checkOnTime expects delayed tasks to run no earlier than asked. A task
// that never ran is already reported by the invocation check.
func (sc *scenario) checkOnTime(t *plannedTask) {
	if t.delay == 0 {
		return
	}
	sc.rec.mu.Lock()
	first, ran := sc.rec.firstAt[t.id]
	sc.rec.mu.Unlock()
	if !ran {
		return
	}
	if !first.Before(t.notBefore) {
		sc.sum.ScheduledOnTime++
		return
	}
	sc.rep.failf("scheduled_on_time", "task %s ran %v before its time",
		t.id, t.notBefore.Sub(first))
}

// checkAggregation expects every grouped payload in exactly one
// aggregated task, each aggregated task handled once, and the original
// grouped tasks gone from Redis.
func (sc *scenario) checkAggregation() {
	grouped := map[string]bool{}
	for _, t := range sc.plan {
		if t.group != "" {
			grouped[string(t.payload)] = true
		}
	}

	sc.rec.mu.Lock()
	for p, n := range sc.rec.groupedIn {
		sc.rep.expect(grouped[p], "aggregated_payload", "unknown payload %q", p)
		sc.rep.expect(n == 1, "aggregated_payload", "payload %q in %d aggregated tasks", p, n)
		sc.sum.AggregatedTasksIn += n
	}
	for id, n := range sc.rec.aggregated {
		sc.rep.expect(n == 1, "aggregated_handled", "aggregated task %s handled %d times", id, n)
		sc.sum.AggregatedBatches[sc.rec.aggQueue[id]]++
	}
	sc.rec.mu.Unlock()

	expectEqual(sc.rep, "aggregated_tasks_in", sc.sum.AggregatedTasksIn, len(grouped))
	for q, n := range expectedBatches(sc.plan) {
		expectEqual(sc.rep, "aggregated_batches_"+q, sc.sum.AggregatedBatches[q], n)
	}
	sc.checkGroupedGone()
}

// checkGroupedGone expects GetTaskInfo to no longer find grouped tasks.
func (sc *scenario) checkGroupedGone() {
	var pending []*plannedTask
	for _, t := range sc.plan {
		if t.group != "" {
			pending = append(pending, t)
		}
	}
	poll(context.Background(), groupedGoneWithin, func() bool {
		var still []*plannedTask
		for _, t := range pending {
			_, err := sc.insp.GetTaskInfo(t.queue, t.id)
			if !errors.Is(err, asynq.ErrTaskNotFound) {
				still = append(still, t)
			}
		}
		pending = still
		return len(pending) == 0
	})
	sc.sum.GroupedIDsGone = len(byKind(sc.plan, kindGrouped)) +
		len(byKind(sc.plan, kindGroupedUnique)) - len(pending)
	sc.rep.expect(len(pending) == 0, "grouped_ids_gone", "%d grouped tasks still in Redis", len(pending))
}

// checkArchived expects exactly the always-failing and the cancelled
// tasks in the archive, with the retry bookkeeping asynq keeps.
func (sc *scenario) checkArchived(q string) {
	want := tasksWhere(sc.plan, q, func(t *plannedTask) bool {
		return t.kind == kindAlwaysFail || t.kind == kindLong
	})
	infos := sc.checkListing("archived_"+q, want,
		func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return sc.insp.ListArchivedTasks(q, o...) })
	sc.sum.Archived[q] = len(infos)
	for _, info := range infos {
		if info.Type != string(kindAlwaysFail) {
			continue
		}
		ok := info.State == asynq.TaskStateArchived && info.Retried == alwaysFailRetry &&
			info.MaxRetry == alwaysFailRetry && info.LastErr == errPlanned.Error()
		sc.rep.expect(ok, "archived_info", "%s: state %v retried %d/%d last error %q",
			info.ID, info.State, info.Retried, info.MaxRetry, info.LastErr)
	}
}

// checkCompleted expects exactly the result tasks among the completed
// ones, and reads each result back byte for byte.
func (sc *scenario) checkCompleted(q string) {
	want := tasksWhere(sc.plan, q, func(t *plannedTask) bool { return t.kind == kindResult })
	infos := sc.checkListing("completed_"+q, want,
		func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return sc.insp.ListCompletedTasks(q, o...) })
	sc.sum.Completed[q] = len(infos)

	for _, t := range want {
		info, err := sc.insp.GetTaskInfo(q, t.id)
		if err != nil {
			sc.rep.failf("result", "task %s: %v", t.id, err)
			continue
		}
		ok := info.State == asynq.TaskStateCompleted &&
			string(info.Result) == string(expectedResult(t.payload))
		if sc.rep.expect(ok, "result", "task %s: state %v, result %q",
			t.id, info.State, info.Result) {
			sc.sum.ResultsVerified++
		}
	}
}

// expectedFinal computes each work queue's settled GetQueueInfo counts.
func (sc *scenario) expectedFinal() map[string]QueueCounts {
	want := map[string]QueueCounts{}
	for q, n := range expectedBatches(sc.plan) {
		c := want[q]
		c.ProcessedTotal += n // each aggregated task succeeds once
		want[q] = c
	}
	for _, t := range sc.plan {
		c := want[t.queue]
		spec := t.spec()
		c.ProcessedTotal += spec.invocations
		c.FailedTotal += spec.failures
		switch t.kind {
		case kindAlwaysFail, kindLong:
			c.Archived++
		case kindResult:
			c.Completed++
		}
		want[t.queue] = c
	}
	return want
}

func (sc *scenario) checkFinalQueue(q string) {
	info, err := sc.insp.GetQueueInfo(q)
	if !sc.rep.expect(err == nil, "queue_info_final_"+q, "%v", err) {
		return
	}
	got := countsOf(info)
	sc.sum.FinalQueues[q] = got
	want := sc.expectedFinal()[q]
	sc.rep.expect(got == want, "queue_info_final_"+q, "got %+v, want %+v", got, want)
}

// checkCancelledTask expects the cancelled task archived with the
// context's error.
func (sc *scenario) checkCancelledTask() {
	long := byKind(sc.plan, kindLong)[0]
	info, err := sc.insp.GetTaskInfo(long.queue, long.id)
	if !sc.rep.expect(err == nil, "cancelled_archived", "%v", err) {
		return
	}
	sc.sum.CancelledArchived = info.State == asynq.TaskStateArchived &&
		strings.Contains(info.LastErr, context.Canceled.Error())
	sc.rep.expect(sc.sum.CancelledArchived, "cancelled_archived",
		"state %v, last error %q", info.State, info.LastErr)
}

// checkFinalQueueList expects the scheduler's queue next to the work
// queues.
func (sc *scenario) checkFinalQueueList() {
	queues, err := sc.insp.Queues()
	if !sc.rep.expect(err == nil, "inspector_queues_final", "%v", err) {
		return
	}
	sort.Strings(queues)
	sc.sum.InspectorQueuesFinal = len(queues)
	want := append([]string{periodicQueue}, workQueues...)
	sort.Strings(want)
	expectEqual(sc.rep, "inspector_queues_final", strings.Join(queues, ","), strings.Join(want, ","))
}
