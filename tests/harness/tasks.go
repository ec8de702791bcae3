package main

// Three modes for tests that change tasks between asynq's calls (for
// example inside Redis, behind the proxy's back) and then look at what
// asynq does with them:
//
//   - -enqueue-batch: one Client enqueues -batch-count tasks of
//     -batch-type to -batch-queue, payload "<-batch-payload>-000",
//     "-001", …, optionally -batch-process-in later, optionally into
//     group -batch-group (to be aggregated). Prints
//     {"tasks":[{"id":…,"queue":…,"type":…,"payload":…,"state":…}],
//     "errors":["…"]}.
//   - -handle: one Server on -handle-queues whose handler records every
//     task it is given (id, queue, type, payload, retry count) and
//     returns nil; an aggregated task (see -handle-group-grace) is
//     recorded with the payloads of the tasks it was made of ("batch").
//     -handle-retry-delay replaces asynq's retry backoff (a task whose
//     lease expired is retried too). It runs until it has handled
//     -handle-expect tasks and the Inspector shows no pending, active,
//     scheduled, retry or aggregating task in its queues, then
//     -handle-settle longer (so that a late delivery would still be
//     seen), or until -handle-timeout. Prints
//     {"handled":[…],"reached":b,"drained":b,"errors":n,
//     "first_error":"…","start_error":"…","inspect_error":"…"}.
//   - -list-tasks: the Inspector's listings of -list-queue for each state
//     of -list-states, and GetTaskInfo for each of -list-ids. Prints
//     {"lists":{"pending":[task…],…},"list_errors":{"state":"…"},
//     "infos":[{"id":…,"task":task|null,"error":"…"}]}, where a task is
//     {"id","queue","type","payload","state","last_err","retried"}.
//
// Payloads are printed as text: the tests give recognisable ASCII ones.
// All three exit 0 whenever they ran, whatever their calls returned, and
// 2 on bad flags.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

const (
	handleConcurrency = 4
	// handlePoll is how often -handle asks the Inspector whether its
	// queues are drained.
	handlePoll = 200 * time.Millisecond
)

// taskStates are the states -list-states may name, in asynq's order.
var taskStates = []string{"pending", "active", "scheduled", "retry", "archived", "completed"}

// taskView is one task as the modes print it.
type taskView struct {
	ID      string `json:"id"`
	Queue   string `json:"queue"`
	Type    string `json:"type"`
	Payload string `json:"payload"`
	State   string `json:"state,omitempty"`
	LastErr string `json:"last_err"`
	Retried int    `json:"retried"`
	// Batch is, for an aggregated task -handle was given, the payloads
	// of the tasks it was made of.
	Batch []string `json:"batch,omitempty"`
}

func viewOf(info *asynq.TaskInfo) taskView {
	return taskView{
		ID:      info.ID,
		Queue:   info.Queue,
		Type:    info.Type,
		Payload: string(info.Payload),
		State:   info.State.String(),
		LastErr: info.LastErr,
		Retried: info.Retried,
	}
}

func printJSON(v interface{}) int {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		return 1
	}
	return 0
}

// enqueueBatch enqueues the batch and prints each task it was given back.
func enqueueBatch(cfg config) int {
	client := asynq.NewClient(redisOpt(cfg, login{cfg.username, cfg.password}))
	defer client.Close()
	out := struct {
		Tasks  []taskView `json:"tasks"`
		Errors []string   `json:"errors"`
	}{Tasks: []taskView{}, Errors: []string{}}
	for i := 0; i < cfg.batchCount; i++ {
		payload := fmt.Sprintf("%s-%03d", cfg.batchPayload, i)
		opts := []asynq.Option{asynq.Queue(cfg.batchQueue)}
		if cfg.batchProcessIn > 0 {
			opts = append(opts, asynq.ProcessIn(cfg.batchProcessIn))
		}
		if cfg.batchGroup != "" {
			opts = append(opts, asynq.Group(cfg.batchGroup))
		}
		info, err := client.Enqueue(asynq.NewTask(cfg.batchType, []byte(payload)), opts...)
		if err != nil {
			out.Errors = append(out.Errors, err.Error())
			continue
		}
		out.Tasks = append(out.Tasks, viewOf(info))
	}
	return printJSON(out)
}

type handleReport struct {
	Handled      []taskView `json:"handled"`
	Reached      bool       `json:"reached"`
	Drained      bool       `json:"drained"`
	Errors       int        `json:"errors"`
	FirstError   string     `json:"first_error"`
	StartError   string     `json:"start_error"`
	InspectError string     `json:"inspect_error"`
}

// handle runs the Server until it handled what it expects and its
// queues are drained (then -handle-settle more), or -handle-timeout.
func handle(cfg config) int {
	out := handleReport{Handled: []taskView{}}
	queues := map[string]int{}
	for _, q := range cfg.handleQueues {
		queues[q] = 1
	}
	var mu sync.Mutex
	record := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		q, _ := asynq.GetQueueName(ctx)
		retried, _ := asynq.GetRetryCount(ctx)
		view := taskView{ID: id, Queue: q, Type: t.Type(), Payload: string(t.Payload()), Retried: retried}
		if cfg.handleGroupGrace > 0 && t.Type() == typeAggregated {
			payloads, err := decodeBatch(t.Payload())
			if err != nil {
				return fmt.Errorf("aggregated task %s: %w", id, err)
			}
			view.Payload = ""
			view.Batch = []string{}
			for _, p := range payloads {
				view.Batch = append(view.Batch, string(p))
			}
		}
		mu.Lock()
		out.Handled = append(out.Handled, view)
		mu.Unlock()
		return nil
	})
	handled := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(out.Handled)
	}

	opt := redisOpt(cfg, login{cfg.username, cfg.password})
	logger := &countingLogger{quiet: cfg.quiet}
	srvCfg := asynq.Config{
		Concurrency:              handleConcurrency,
		Queues:                   queues,
		ShutdownTimeout:          shutdownTimeout,
		DelayedTaskCheckInterval: cfg.handleDelayedCheck,
		Logger:                   logger,
		LogLevel:                 asynq.WarnLevel,
	}
	if cfg.handleRetryDelay > 0 {
		delay := cfg.handleRetryDelay
		srvCfg.RetryDelayFunc = func(int, error, *asynq.Task) time.Duration { return delay }
	}
	if cfg.handleGroupGrace > 0 {
		srvCfg.GroupAggregator = aggregator()
		srvCfg.GroupGracePeriod = cfg.handleGroupGrace
		srvCfg.GroupMaxDelay = 2 * cfg.handleGroupGrace
	}
	srv := asynq.NewServer(opt, srvCfg)
	if err := srv.Start(record); err != nil {
		out.StartError = err.Error()
	} else {
		insp := asynq.NewInspector(opt)
		deadline := time.Now().Add(cfg.handleTimeout)
		for time.Now().Before(deadline) {
			if handled() >= cfg.handleExpect {
				out.Reached = true
				drained, err := queuesDrained(insp, cfg.handleQueues)
				if err != nil {
					out.InspectError = err.Error()
				}
				if drained {
					out.Drained = true
					time.Sleep(cfg.handleSettle)
					break
				}
			}
			time.Sleep(handlePoll)
		}
		insp.Close()
		srv.Shutdown()
	}

	logger.mu.Lock()
	out.Errors, out.FirstError = logger.errors, logger.first
	logger.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(out.Handled, func(i, j int) bool { return out.Handled[i].ID < out.Handled[j].ID })
	return printJSON(out)
}

// queuesDrained says whether no queue holds a task that a worker could
// still be given (pending, active, scheduled, retry, or aggregating in a
// group).
func queuesDrained(insp *asynq.Inspector, queues []string) (bool, error) {
	for _, q := range queues {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			return false, fmt.Errorf("GetQueueInfo(%s): %w", q, err)
		}
		if info.Pending+info.Active+info.Scheduled+info.Retry+info.Aggregating > 0 {
			return false, nil
		}
	}
	return true, nil
}

type infoOutcome struct {
	ID    string    `json:"id"`
	Task  *taskView `json:"task"`
	Error string    `json:"error"`
}

// listTasks prints the listings and task infos -list-tasks asks for.
func listTasks(cfg config) int {
	insp := asynq.NewInspector(redisOpt(cfg, login{cfg.username, cfg.password}))
	defer insp.Close()
	q := cfg.listQueue
	listers := map[string]lister{
		"pending":   func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return insp.ListPendingTasks(q, o...) },
		"active":    func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return insp.ListActiveTasks(q, o...) },
		"scheduled": func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return insp.ListScheduledTasks(q, o...) },
		"retry":     func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return insp.ListRetryTasks(q, o...) },
		"archived":  func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return insp.ListArchivedTasks(q, o...) },
		"completed": func(o ...asynq.ListOption) ([]*asynq.TaskInfo, error) { return insp.ListCompletedTasks(q, o...) },
	}
	out := struct {
		Lists      map[string][]taskView `json:"lists"`
		ListErrors map[string]string     `json:"list_errors"`
		Infos      []infoOutcome         `json:"infos"`
	}{Lists: map[string][]taskView{}, ListErrors: map[string]string{}, Infos: []infoOutcome{}}
	for _, state := range cfg.listStates {
		infos, err := listAll(listers[state])
		if err != nil {
			out.ListErrors[state] = err.Error()
		}
		views := []taskView{}
		for _, info := range infos {
			views = append(views, viewOf(info))
		}
		out.Lists[state] = views
	}
	for _, id := range cfg.listIDs {
		outcome := infoOutcome{ID: id}
		info, err := insp.GetTaskInfo(q, id)
		if err != nil {
			outcome.Error = err.Error()
		} else {
			v := viewOf(info)
			outcome.Task = &v
		}
		out.Infos = append(out.Infos, outcome)
	}
	return printJSON(out)
}

// splitStates parses -list-states: comma-separated states of taskStates.
func splitStates(s string) ([]string, error) {
	var states []string
	seen := map[string]bool{}
	for _, st := range strings.Split(s, ",") {
		st = strings.TrimSpace(st)
		known := false
		for _, k := range taskStates {
			known = known || k == st
		}
		switch {
		case !known:
			return nil, fmt.Errorf("-list-states %q: unknown state %q (one of %s)", s, st, strings.Join(taskStates, ", "))
		case seen[st]:
			return nil, fmt.Errorf("-list-states %q: %q twice", s, st)
		}
		seen[st] = true
		states = append(states, st)
	}
	return states, nil
}

// splitIDs parses -list-ids: comma-separated, empty for none.
func splitIDs(s string) []string {
	var ids []string
	for _, id := range strings.Split(s, ",") {
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}
