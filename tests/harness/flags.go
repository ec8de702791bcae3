package main

// Command-line flags. Besides the scenario there are small modes (-probe,
// -flood, -worker-check, -dashboard-check, -enqueue-batch, -handle,
// -list-tasks); each has flags of its own,
// and giving one of those without its mode is an error rather than
// something silently ignored, since a test that misspells its mode would
// otherwise run the whole scenario instead.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

type config struct {
	redisAddr string
	username  string
	password  string
	logins    *logins // -logins: one login per component; nil: -username/-password for all
	tasks     int
	timeout   time.Duration
	out       string
	quiet     bool
	tls       tlsFlags

	probe        bool
	probeQueue   string
	probeType    string
	probePayload int

	flood          bool
	floodQueue     string
	floodType      string
	floodRate      float64
	floodFor       time.Duration
	floodProducers int

	workerCheck  bool
	workerQueues []string
	workerFor    time.Duration

	dashboardCheck bool
	queue          string
	taskID         string
	entryID        string
	group          string

	enqueueBatch   bool
	batchQueue     string
	batchType      string
	batchCount     int
	batchPayload   string
	batchProcessIn time.Duration
	batchGroup     string

	handle             bool
	handleQueues       []string
	handleExpect       int
	handleTimeout      time.Duration
	handleSettle       time.Duration
	handleDelayedCheck time.Duration
	handleRetryDelay   time.Duration
	handleGroupGrace   time.Duration

	listTasks  bool
	listQueue  string
	listStates []string
	listIDs    []string
}

// modeFlags names the mode each mode-only flag belongs to.
var modeFlags = map[string]string{
	"probe-queue":          "probe",
	"probe-type":           "probe",
	"probe-payload-bytes":  "probe",
	"flood-queue":          "flood",
	"flood-type":           "flood",
	"flood-rate":           "flood",
	"flood-for":            "flood",
	"flood-producers":      "flood",
	"worker-queues":        "worker-check",
	"worker-for":           "worker-check",
	"queue":                "dashboard-check",
	"task-id":              "dashboard-check",
	"entry-id":             "dashboard-check",
	"group":                "dashboard-check",
	"batch-queue":          "enqueue-batch",
	"batch-type":           "enqueue-batch",
	"batch-count":          "enqueue-batch",
	"batch-payload":        "enqueue-batch",
	"batch-process-in":     "enqueue-batch",
	"batch-group":          "enqueue-batch",
	"handle-queues":        "handle",
	"handle-expect":        "handle",
	"handle-timeout":       "handle",
	"handle-settle":        "handle",
	"handle-delayed-check": "handle",
	"handle-retry-delay":   "handle",
	"handle-group-grace":   "handle",
	"list-queue":           "list-tasks",
	"list-states":          "list-tasks",
	"list-ids":             "list-tasks",
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	var loginsPath, workerQueues, handleQueues, listStates, listIDs string
	fs := flag.NewFlagSet("harness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.redisAddr, "redis", "", "Redis (or proxy) address, host:port (required)")
	fs.StringVar(&cfg.username, "username", "", "Redis username; empty for none")
	fs.StringVar(&cfg.password, "password", "", "Redis password; empty for none")
	fs.StringVar(&loginsPath, "logins", "", "JSON file with one login per component (producer, scheduler, dashboard, operator, workers per queue)")
	fs.IntVar(&cfg.tasks, "tasks", 2000, fmt.Sprintf("number of tasks to enqueue (at least %d)", minTasks))
	fs.DurationVar(&cfg.timeout, "timeout", 3*time.Minute, "bound for the whole run")
	fs.StringVar(&cfg.out, "out", "", "write the JSON summary to this file instead of stdout")
	fs.BoolVar(&cfg.quiet, "quiet", false, "print nothing but failures and the summary")
	fs.StringVar(&cfg.tls.ca, "tls-ca", "", "PEM CA file: connect over TLS and trust this CA")
	fs.StringVar(&cfg.tls.cert, "tls-cert", "", "PEM client certificate (mutual TLS)")
	fs.StringVar(&cfg.tls.key, "tls-key", "", "PEM client key (mutual TLS)")
	fs.StringVar(&cfg.tls.serverName, "tls-server-name", "", "name to verify in the server certificate (default: the -redis host)")

	fs.BoolVar(&cfg.probe, "probe", false, "only enqueue one task and print the outcome as JSON (exit 0 either way)")
	fs.StringVar(&cfg.probeQueue, "probe-queue", "probe", "queue of the -probe task")
	fs.StringVar(&cfg.probeType, "probe-type", "probe", "task type of the -probe task")
	fs.IntVar(&cfg.probePayload, "probe-payload-bytes", 5, "payload size of the -probe task")
	fs.BoolVar(&cfg.flood, "flood", false, "only enqueue at -flood-rate for -flood-for and print accepted/limited counts as JSON")
	fs.StringVar(&cfg.floodQueue, "flood-queue", "flood", "queue of the -flood tasks")
	fs.StringVar(&cfg.floodType, "flood-type", "flood", "task type of the -flood tasks")
	fs.Float64Var(&cfg.floodRate, "flood-rate", 100, "enqueues per second -flood attempts")
	fs.DurationVar(&cfg.floodFor, "flood-for", 10*time.Second, "how long -flood runs")
	fs.IntVar(&cfg.floodProducers, "flood-producers", 4, "goroutines -flood enqueues from")

	fs.BoolVar(&cfg.workerCheck, "worker-check", false, "only run one Server on -worker-queues for -worker-for and print what it processed as JSON")
	fs.StringVar(&workerQueues, "worker-queues", "", "comma-separated queues of the -worker-check Server")
	fs.DurationVar(&cfg.workerFor, "worker-for", 5*time.Second, "how long the -worker-check Server runs")

	fs.BoolVar(&cfg.dashboardCheck, "dashboard-check", false, "only call every Inspector read and mutation once and print the outcomes as JSON")
	fs.StringVar(&cfg.queue, "queue", "", "queue the -dashboard-check calls name")
	fs.StringVar(&cfg.taskID, "task-id", "", "task id the -dashboard-check calls name")
	fs.StringVar(&cfg.entryID, "entry-id", "harness-no-entry", "scheduler entry id for -dashboard-check's ListSchedulerEnqueueEvents")
	fs.StringVar(&cfg.group, "group", "g0", "group for -dashboard-check's aggregating-task calls")

	fs.BoolVar(&cfg.enqueueBatch, "enqueue-batch", false, "only enqueue -batch-count tasks and print their ids and payloads as JSON")
	fs.StringVar(&cfg.batchQueue, "batch-queue", "batch", "queue of the -enqueue-batch tasks")
	fs.StringVar(&cfg.batchType, "batch-type", "batch", "task type of the -enqueue-batch tasks")
	fs.IntVar(&cfg.batchCount, "batch-count", 10, "how many tasks -enqueue-batch enqueues")
	fs.StringVar(&cfg.batchPayload, "batch-payload", "batch-payload", "payload prefix of the -enqueue-batch tasks (each gets -NNN appended)")
	fs.DurationVar(&cfg.batchProcessIn, "batch-process-in", 0, "enqueue the -enqueue-batch tasks to run this much later (0: now)")
	fs.StringVar(&cfg.batchGroup, "batch-group", "", "enqueue the -enqueue-batch tasks into this group, for aggregation (empty: no group)")

	fs.BoolVar(&cfg.handle, "handle", false, "only run one Server on -handle-queues until it handled -handle-expect tasks and the queues are drained, and print every task it handled as JSON")
	fs.StringVar(&handleQueues, "handle-queues", "", "comma-separated queues of the -handle Server")
	fs.IntVar(&cfg.handleExpect, "handle-expect", 0, "how many tasks -handle waits for before it waits for drained queues")
	fs.DurationVar(&cfg.handleTimeout, "handle-timeout", time.Minute, "longest -handle runs")
	fs.DurationVar(&cfg.handleSettle, "handle-settle", 2*time.Second, "how long -handle keeps running once its queues are drained")
	fs.DurationVar(&cfg.handleDelayedCheck, "handle-delayed-check", time.Second, "the -handle Server's DelayedTaskCheckInterval")
	fs.DurationVar(&cfg.handleRetryDelay, "handle-retry-delay", 0, "the -handle Server retries a failed or lease-expired task this much later (0: asynq's default backoff)")
	fs.DurationVar(&cfg.handleGroupGrace, "handle-group-grace", 0, "run the -handle Server with a GroupAggregator and this GroupGracePeriod (at least 1s; 0: no aggregation)")

	fs.BoolVar(&cfg.listTasks, "list-tasks", false, "only print the Inspector's task listings of -list-queue (and GetTaskInfo of -list-ids) as JSON")
	fs.StringVar(&cfg.listQueue, "list-queue", "", "queue -list-tasks lists")
	fs.StringVar(&listStates, "list-states", strings.Join(taskStates, ","), "comma-separated states -list-tasks lists")
	fs.StringVar(&listIDs, "list-ids", "", "comma-separated task ids of -list-queue whose GetTaskInfo -list-tasks prints")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := cfg.checkModes(fs, loginsPath); err != nil {
		return cfg, err
	}
	switch {
	case cfg.redisAddr == "":
		return cfg, errors.New("-redis is required")
	case cfg.tasks < minTasks:
		// Below this some kinds would get too few tasks to say much.
		return cfg, fmt.Errorf("-tasks must be at least %d", minTasks)
	case cfg.timeout <= 0:
		return cfg, errors.New("-timeout must be positive")
	}
	if cfg.workerCheck {
		if workerQueues == "" {
			return cfg, errors.New("-worker-check needs -worker-queues")
		}
		queues, err := splitQueues(workerQueues)
		if err != nil {
			return cfg, err
		}
		cfg.workerQueues = queues
	}
	if cfg.handle {
		if handleQueues == "" {
			return cfg, errors.New("-handle needs -handle-queues")
		}
		queues, err := splitQueues(handleQueues)
		if err != nil {
			return cfg, fmt.Errorf("-handle-queues: %w", err)
		}
		cfg.handleQueues = queues
	}
	if cfg.listTasks {
		states, err := splitStates(listStates)
		if err != nil {
			return cfg, err
		}
		cfg.listStates = states
		cfg.listIDs = splitIDs(listIDs)
	}
	if loginsPath != "" {
		l, err := loadLogins(loginsPath)
		if err != nil {
			return cfg, err
		}
		cfg.logins = l
	}
	return cfg, nil
}

// checkModes allows at most one mode, each mode-only flag only with its
// mode, and -logins only for the scenario.
func (cfg *config) checkModes(fs *flag.FlagSet, loginsPath string) error {
	modes := map[string]bool{
		"probe": cfg.probe, "flood": cfg.flood, "worker-check": cfg.workerCheck, "dashboard-check": cfg.dashboardCheck,
		"enqueue-batch": cfg.enqueueBatch, "handle": cfg.handle, "list-tasks": cfg.listTasks,
	}
	var chosen []string
	for _, m := range sortedKeys(modes) {
		if modes[m] {
			chosen = append(chosen, "-"+m)
		}
	}
	if len(chosen) > 1 {
		return fmt.Errorf("%s exclude each other", strings.Join(chosen, " and "))
	}
	var err error
	fs.Visit(func(f *flag.Flag) {
		if mode, ok := modeFlags[f.Name]; ok && !modes[mode] && err == nil {
			err = fmt.Errorf("-%s applies only with -%s", f.Name, mode)
		}
	})
	if err != nil {
		return err
	}
	switch {
	case loginsPath != "" && len(chosen) > 0:
		return fmt.Errorf("-logins applies only to the scenario, not to %s", chosen[0])
	case loginsPath != "" && (cfg.username != "" || cfg.password != ""):
		return errors.New("-logins replaces -username/-password; give one or the other")
	case cfg.probe && (cfg.probeQueue == "" || cfg.probeType == ""):
		return errors.New("-probe-queue and -probe-type must not be empty")
	case cfg.probe && cfg.probePayload < 0:
		return errors.New("-probe-payload-bytes must not be negative")
	case cfg.flood && (cfg.floodQueue == "" || cfg.floodType == ""):
		return errors.New("-flood-queue and -flood-type must not be empty")
	case cfg.flood && (cfg.floodRate <= 0 || cfg.floodFor <= 0 || cfg.floodProducers <= 0):
		return errors.New("-flood-rate, -flood-for and -flood-producers must be positive")
	case cfg.workerCheck && cfg.workerFor <= 0:
		return errors.New("-worker-for must be positive")
	case cfg.dashboardCheck && (cfg.queue == "" || cfg.taskID == ""):
		return errors.New("-dashboard-check needs -queue and -task-id")
	case cfg.dashboardCheck && (cfg.entryID == "" || cfg.group == ""):
		return errors.New("-entry-id and -group must not be empty")
	case cfg.enqueueBatch && (cfg.batchQueue == "" || cfg.batchType == ""):
		return errors.New("-batch-queue and -batch-type must not be empty")
	case cfg.enqueueBatch && (cfg.batchCount < 0 || cfg.batchProcessIn < 0):
		return errors.New("-batch-count and -batch-process-in must not be negative")
	case cfg.handle && (cfg.handleExpect < 0 || cfg.handleSettle < 0):
		return errors.New("-handle-expect and -handle-settle must not be negative")
	case cfg.handle && (cfg.handleTimeout <= 0 || cfg.handleDelayedCheck <= 0):
		return errors.New("-handle-timeout and -handle-delayed-check must be positive")
	case cfg.handle && cfg.handleRetryDelay < 0:
		return errors.New("-handle-retry-delay must not be negative")
	case cfg.handle && cfg.handleGroupGrace != 0 && cfg.handleGroupGrace < time.Second:
		return errors.New("-handle-group-grace must be 0 or at least 1s (asynq's minimum)")
	case cfg.listTasks && cfg.listQueue == "":
		return errors.New("-list-tasks needs -list-queue")
	}
	return nil
}

// splitQueues parses -worker-queues: comma-separated, no empty or
// repeated names.
func splitQueues(s string) ([]string, error) {
	var queues []string
	seen := map[string]bool{}
	for _, q := range strings.Split(s, ",") {
		q = strings.TrimSpace(q)
		switch {
		case q == "":
			return nil, fmt.Errorf("-worker-queues %q: empty queue name", s)
		case seen[q]:
			return nil, fmt.Errorf("-worker-queues %q: %q twice", s, q)
		}
		seen[q] = true
		queues = append(queues, q)
	}
	return queues, nil
}
