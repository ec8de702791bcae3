package main

// The JSON summary. Everything outside "timing" and "asynq_version" is a
// deterministic count or flag: a run straight against Redis and a run
// through the proxy must produce identical values there, so a comparison
// can diff the two after dropping those two fields.

import (
	"encoding/json"
	"os"
	"runtime/debug"
)

type Summary struct {
	OK           bool     `json:"ok"`
	Failures     []string `json:"failures"`
	AsynqVersion string   `json:"asynq_version"`

	Tasks              int                       `json:"tasks"`
	Enqueued           map[string]map[string]int `json:"enqueued"` // queue → kind → count
	EnqueuedTotal      int                       `json:"enqueued_total"`
	DuplicatesTried    int                       `json:"duplicates_tried"`
	DuplicatesRejected int                       `json:"duplicates_rejected"`
	IDConflictsTried   int                       `json:"id_conflicts_tried"`
	IDConflictsRejects int                       `json:"id_conflicts_rejected"`

	Initial InitialState `json:"initial"`

	HandledIDs         int            `json:"handled_ids"`
	HandlerInvocations map[string]int `json:"handler_invocations"` // kind → calls
	ScheduledOnTime    int            `json:"scheduled_on_time"`
	RetryListed        int            `json:"retry_listed"`
	RetryRun           int            `json:"retry_run"`
	Archived           map[string]int `json:"archived"`  // queue → tasks
	Completed          map[string]int `json:"completed"` // queue → tasks
	ResultsVerified    int            `json:"results_verified"`

	AggregatedTasksIn int            `json:"aggregated_tasks_in"`
	AggregatedBatches map[string]int `json:"aggregated_batches"` // queue → aggregated tasks
	GroupedIDsGone    int            `json:"grouped_ids_gone"`

	SchedulerRan          bool `json:"scheduler_ran"`
	SchedulerEntryListed  bool `json:"scheduler_entry_listed"`
	SchedulerEventsListed bool `json:"scheduler_events_listed"`

	Cancelled         bool `json:"cancelled"`
	CancelledArchived bool `json:"cancelled_archived"`

	InspectorQueues      int                    `json:"inspector_queues"`
	InspectorQueuesFinal int                    `json:"inspector_queues_final"`
	ServersListed        bool                   `json:"servers_listed"` // Servers() showed exactly the servers started
	WorkersSeen          bool                   `json:"workers_seen"`
	ActiveListed         bool                   `json:"active_listed"`
	FinalQueues          map[string]QueueCounts `json:"final_queues"`

	ServersAfterShutdown          int `json:"servers_after_shutdown"`
	SchedulerEntriesAfterShutdown int `json:"scheduler_entries_after_shutdown"`

	Timing Timing `json:"timing"`
}

// InitialState is what the Inspector shows after the enqueue and before
// any server or scheduler runs, when nothing can move yet.
type InitialState struct {
	Queues      []string       `json:"queues"`
	Pending     map[string]int `json:"pending"`
	Scheduled   map[string]int `json:"scheduled"`
	Aggregating map[string]int `json:"aggregating"`
	Groups      map[string]int `json:"groups"`
	TaskInfos   int            `json:"task_infos_checked"`
}

// QueueCounts is one queue's GetQueueInfo once everything has settled.
type QueueCounts struct {
	Pending        int `json:"pending"`
	Active         int `json:"active"`
	Scheduled      int `json:"scheduled"`
	Retry          int `json:"retry"`
	Archived       int `json:"archived"`
	Completed      int `json:"completed"`
	Aggregating    int `json:"aggregating"`
	Groups         int `json:"groups"`
	ProcessedTotal int `json:"processed_total"`
	FailedTotal    int `json:"failed_total"`
}

// Timing holds whatever may change from one run to the next; comparisons
// ignore it.
type Timing struct {
	TotalMS            int64  `json:"total_ms"`
	EnqueueMS          int64  `json:"enqueue_ms"`
	ProcessingMS       int64  `json:"processing_ms"`
	ShutdownMS         int64  `json:"shutdown_ms"`
	WorkerSeenAfterMS  int64  `json:"worker_seen_after_ms"`
	EntryListedAfterMS int64  `json:"scheduler_entry_listed_after_ms"`
	SchedulerFirings   int    `json:"scheduler_firings"`
	CancelPublishes    int    `json:"cancel_publishes"`
	GoRedisVersion     string `json:"go_redis_version"`
}

func newSummary(tasks int) *Summary {
	return &Summary{
		Failures:           []string{},
		Tasks:              tasks,
		Enqueued:           map[string]map[string]int{},
		HandlerInvocations: map[string]int{},
		Archived:           map[string]int{},
		Completed:          map[string]int{},
		AggregatedBatches:  map[string]int{},
		FinalQueues:        map[string]QueueCounts{},
		Initial: InitialState{
			Queues:      []string{},
			Pending:     map[string]int{},
			Scheduled:   map[string]int{},
			Aggregating: map[string]int{},
			Groups:      map[string]int{},
		},
	}
}

// moduleVersion reads a dependency's version from the build info, so the
// summary says which asynq the binary was really built with.
func moduleVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == path {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return "unknown"
}

// writeSummary writes indented JSON to path, or to stdout when path is "".
func writeSummary(path string, s *Summary) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if path == "" {
		_, err = os.Stdout.Write(data)
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
