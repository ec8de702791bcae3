package main

// Small helpers over the Inspector: paging through task lists, turning
// listings into id sets, and comparing id sets with the plan.

import (
	"fmt"
	"sort"

	"github.com/hibiken/asynq"
)

// listPageSize is small on purpose: every listing in a 2000-task run then
// spans several pages, so paging through the proxy gets exercised too.
const listPageSize = 100

// lister is any Inspector List*Tasks call with its queue (and group) bound.
type lister func(opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)

// listAll pages through a listing until a short page.
func listAll(list lister) ([]*asynq.TaskInfo, error) {
	var all []*asynq.TaskInfo
	for page := 1; ; page++ {
		infos, err := list(asynq.PageSize(listPageSize), asynq.Page(page))
		if err != nil {
			return all, err
		}
		all = append(all, infos...)
		if len(infos) < listPageSize {
			return all, nil
		}
	}
}

// idSet is a set of task ids.
type idSet map[string]bool

func idsOfInfos(infos []*asynq.TaskInfo) idSet {
	set := idSet{}
	for _, info := range infos {
		set[info.ID] = true
	}
	return set
}

func idsOfTasks(tasks []*plannedTask) idSet {
	set := idSet{}
	for _, t := range tasks {
		set[t.id] = true
	}
	return set
}

// diff describes how got differs from want, or returns "" when they match.
func (want idSet) diff(got idSet) string {
	var missing, extra []string
	for id := range want {
		if !got[id] {
			missing = append(missing, id)
		}
	}
	for id := range got {
		if !want[id] {
			extra = append(extra, id)
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return fmt.Sprintf("%d missing %v, %d unexpected %v",
		len(missing), firstFew(missing), len(extra), firstFew(extra))
}

// firstFew keeps failure messages short on large mismatches.
func firstFew(ids []string) []string {
	if len(ids) > 5 {
		return ids[:5]
	}
	return ids
}

// tasksWhere selects planned tasks of one queue that match a predicate.
func tasksWhere(plan []*plannedTask, queue string, keep func(*plannedTask) bool) []*plannedTask {
	var out []*plannedTask
	for _, t := range plan {
		if t.queue == queue && keep(t) {
			out = append(out, t)
		}
	}
	return out
}

// countsOf converts a QueueInfo into the summary's counts.
func countsOf(q *asynq.QueueInfo) QueueCounts {
	return QueueCounts{
		Pending:        q.Pending,
		Active:         q.Active,
		Scheduled:      q.Scheduled,
		Retry:          q.Retry,
		Archived:       q.Archived,
		Completed:      q.Completed,
		Aggregating:    q.Aggregating,
		Groups:         q.Groups,
		ProcessedTotal: q.ProcessedTotal,
		FailedTotal:    q.FailedTotal,
	}
}
