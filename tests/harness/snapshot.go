package main

// Phase 2: the Inspector's view right after the enqueue. No server or
// scheduler exists yet, so nothing moves: scheduled tasks stay scheduled
// even once due (only a server's forwarder moves them), and every count
// must match the plan exactly.

import (
	"errors"
	"sort"
	"strings"

	"github.com/hibiken/asynq"
)

func (sc *scenario) checkInitialState() {
	sc.checkQueueList()
	for _, q := range workQueues {
		sc.checkInitialQueue(q)
	}
	sc.checkTaskInfos()
}

// checkQueueList expects exactly the three work queues: the scheduler's
// queue does not exist until the scheduler first enqueues into it.
func (sc *scenario) checkQueueList() {
	queues, err := sc.insp.Queues()
	if !sc.rep.expect(err == nil, "inspector_queues", "%v", err) {
		return
	}
	sort.Strings(queues)
	sc.sum.Initial.Queues = queues
	sc.sum.InspectorQueues = len(queues)
	want := append([]string{}, workQueues...)
	sort.Strings(want)
	expectEqual(sc.rep, "inspector_queues", strings.Join(queues, ","), strings.Join(want, ","))
}

func (sc *scenario) checkInitialQueue(q string) {
	isPending := func(t *plannedTask) bool { return t.delay == 0 && t.group == "" }
	isScheduled := func(t *plannedTask) bool { return t.delay > 0 }
	isGrouped := func(t *plannedTask) bool { return t.group != "" }

	info, err := sc.insp.GetQueueInfo(q)
	if !sc.rep.expect(err == nil, "queue_info_initial", "%s: %v", q, err) {
		return
	}
	sc.sum.Initial.Pending[q] = info.Pending
	sc.sum.Initial.Scheduled[q] = info.Scheduled
	sc.sum.Initial.Aggregating[q] = info.Aggregating
	sc.sum.Initial.Groups[q] = info.Groups
	expectEqual(sc.rep, "queue_info_initial_pending_"+q, info.Pending, len(tasksWhere(sc.plan, q, isPending)))
	expectEqual(sc.rep, "queue_info_initial_scheduled_"+q, info.Scheduled, len(tasksWhere(sc.plan, q, isScheduled)))
	expectEqual(sc.rep, "queue_info_initial_aggregating_"+q, info.Aggregating, len(tasksWhere(sc.plan, q, isGrouped)))
	expectEqual(sc.rep, "queue_info_initial_active_"+q, info.Active, 0)

	sc.checkListing("pending_"+q, tasksWhere(sc.plan, q, isPending),
		func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return sc.insp.ListPendingTasks(q, o...) })
	sc.checkListing("scheduled_"+q, tasksWhere(sc.plan, q, isScheduled),
		func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return sc.insp.ListScheduledTasks(q, o...) })
	sc.checkGroups(q)
}

// checkListing pages through one listing and compares its ids with want.
func (sc *scenario) checkListing(check string, want []*plannedTask, list lister) []*asynq.TaskInfo {
	infos, err := listAll(list)
	if !sc.rep.expect(err == nil, "list_"+check, "%v", err) {
		return nil
	}
	if d := idsOfTasks(want).diff(idsOfInfos(infos)); d != "" {
		sc.rep.failf("list_"+check, "%s", d)
	}
	return infos
}

// checkGroups compares Groups() and each group's aggregating listing with
// the plan.
func (sc *scenario) checkGroups(q string) {
	groups, err := sc.insp.Groups(q)
	if !sc.rep.expect(err == nil, "groups_"+q, "%v", err) {
		return
	}
	sizes := groupSizes(sc.plan)
	seen := 0
	for _, g := range groups {
		want := sizes[groupKey{q, g.Group}]
		expectEqual(sc.rep, "group_size_"+q+"_"+g.Group, g.Size, want)
		if want > 0 {
			seen++
		}
		inGroup := tasksWhere(sc.plan, q, func(t *plannedTask) bool { return t.group == g.Group })
		group := g.Group
		sc.checkListing("aggregating_"+q+"_"+group, inGroup,
			func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) {
				return sc.insp.ListAggregatingTasks(q, group, o...)
			})
	}
	expectEqual(sc.rep, "groups_"+q, seen, groupsPerQueue)
}

// checkTaskInfos reads one task of every kind back with GetTaskInfo and
// checks the fields the client set.
func (sc *scenario) checkTaskInfos() {
	for _, k := range kindOrder {
		tasks := byKind(sc.plan, k)
		if len(tasks) == 0 || tasks[0].id == "" {
			continue
		}
		t := tasks[0]
		info, err := sc.insp.GetTaskInfo(t.queue, t.id)
		if err != nil {
			sc.rep.failf("task_info_"+string(k), "%v", err)
			continue
		}
		sc.sum.Initial.TaskInfos++
		ok := info.Type == string(k) && string(info.Payload) == string(t.payload) &&
			info.State == t.expectedState() && info.MaxRetry == t.spec().maxRetry &&
			info.Group == t.group
		sc.rep.expect(ok, "task_info_"+string(k),
			"type %q state %v max_retry %d group %q, payload match %v",
			info.Type, info.State, info.MaxRetry, info.Group, string(info.Payload) == string(t.payload))
	}
	_, err := sc.insp.GetTaskInfo("default", "no-such-task")
	sc.rep.expect(errors.Is(err, asynq.ErrTaskNotFound), "task_info_missing",
		"want ErrTaskNotFound, got %v", err)
}
