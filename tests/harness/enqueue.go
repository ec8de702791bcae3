package main

// Phase 1: the client enqueues the whole plan before any server runs.
// Enqueueing first is what makes the duplicate checks deterministic: a
// unique task's lock is released when the task completes, so a duplicate
// sent while a server is running could race with that completion.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
)

// enqueueWorkers bounds how many enqueues are in flight; enough to keep a
// 2-core machine busy without hiding per-call latency.
const enqueueWorkers = 8

type enqueueCounts struct {
	dupTried, dupRejected           atomic.Int64
	conflictTried, conflictRejected atomic.Int64
	// failed stops the remaining enqueues after the first error: the run
	// is void by then, and an unreachable Redis would make every one of
	// them wait out go-redis's dial retries.
	failed atomic.Bool
}

// enqueuePlan enqueues every planned task, records the ids asynq returned
// and tries one duplicate of every unique or custom-id task.
func (sc *scenario) enqueuePlan(ctx context.Context) {
	var counts enqueueCounts
	work := make(chan *plannedTask)
	var wg sync.WaitGroup
	for w := 0; w < enqueueWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				if !counts.failed.Load() {
					sc.enqueueOne(ctx, t, &counts)
				}
			}
		}()
	}
	for _, t := range sc.plan {
		work <- t
	}
	close(work)
	wg.Wait()

	sc.sum.DuplicatesTried = int(counts.dupTried.Load())
	sc.sum.DuplicatesRejected = int(counts.dupRejected.Load())
	sc.sum.IDConflictsTried = int(counts.conflictTried.Load())
	sc.sum.IDConflictsRejects = int(counts.conflictRejected.Load())
	expectEqual(sc.rep, "duplicates_rejected", sc.sum.DuplicatesRejected, sc.sum.DuplicatesTried)
	expectEqual(sc.rep, "id_conflicts_rejected", sc.sum.IDConflictsRejects, sc.sum.IDConflictsTried)
	sc.countEnqueued()
}

func (sc *scenario) enqueueOne(ctx context.Context, t *plannedTask, counts *enqueueCounts) {
	// asynq computes the process-at time after this instant and stores it
	// in whole Unix seconds (the scheduled set's score), so the server may
	// run a delayed task from the start of that second on.
	t.notBefore = time.Now().Add(t.delay).Truncate(time.Second)
	info, err := sc.client.EnqueueContext(ctx, t.newTask())
	if err != nil {
		counts.failed.Store(true)
		sc.rep.failf("enqueue", "%s #%d in %q: %v", t.kind, t.index, t.queue, err)
		return
	}
	t.id = info.ID
	sc.rep.expect(info.Queue == t.queue && info.State == t.expectedState(),
		"enqueue_info", "%s #%d: queue %q state %v, want %q %v",
		t.kind, t.index, info.Queue, info.State, t.queue, t.expectedState())

	spec := t.spec()
	if !spec.unique && !spec.customID {
		return
	}
	_, err = sc.client.EnqueueContext(ctx, t.newTask())
	if spec.unique {
		counts.dupTried.Add(1)
		if errors.Is(err, asynq.ErrDuplicateTask) {
			counts.dupRejected.Add(1)
		}
	} else {
		counts.conflictTried.Add(1)
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			counts.conflictRejected.Add(1)
		}
	}
	if err == nil {
		sc.rep.failf("duplicate", "second enqueue of %s #%d was accepted", t.kind, t.index)
	}
}

// countEnqueued fills the per-queue, per-kind enqueue counts.
func (sc *scenario) countEnqueued() {
	for _, t := range sc.plan {
		if t.id == "" {
			continue
		}
		perKind := sc.sum.Enqueued[t.queue]
		if perKind == nil {
			perKind = map[string]int{}
			sc.sum.Enqueued[t.queue] = perKind
		}
		perKind[string(t.kind)]++
		sc.sum.EnqueuedTotal++
	}
	expectEqual(sc.rep, "enqueued_total", sc.sum.EnqueuedTotal, len(sc.plan))
}
