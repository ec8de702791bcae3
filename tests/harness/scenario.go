package main

// The scenario, phase by phase:
//
//  1. enqueue the plan with a Client (no server yet)        enqueue.go
//  2. inspect the untouched queues                          snapshot.go
//  3. start a Scheduler and the Server(s)                   this file
//  4. cancel the long task, run the held retries, watch the
//     scheduler, wait until every queue has settled         flows.go
//  5. check the final state through the Inspector           checks.go
//  6. shut down and check that all of them deregistered     this file
//
// Without -logins every component shares one login and one Server works
// all queues. With -logins (roles.go) each component has its own login
// and each queue its own Server; the summary must come out the same.

import (
	"context"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

// Server settings. Intervals are short so that a 2000-task run finishes in
// seconds; none of them changes what the run must end with.
const (
	serverConcurrency = 10
	delayedCheck      = 500 * time.Millisecond // forwarder: scheduled/retry → pending
	retryDelay        = 200 * time.Millisecond
	heldRetryDelay    = time.Hour // retry_hold waits for the Inspector instead
	groupGracePeriod  = time.Second
	groupMaxDelay     = 2 * time.Second
	shutdownTimeout   = 5 * time.Second
	periodicSpec      = "@every 1s"
)

type scenario struct {
	cfg    config
	rep    *report
	rec    *recorder
	sum    *Summary
	plan   []*plannedTask
	conns  connections
	client *asynq.Client
	insp   dashboard // every Inspector read goes through here
	ops    operator  // every Inspector mutation goes through here
	srvs   []*asynq.Server
	srvFor []serverPlan // what each of srvs was started with
	sched  *asynq.Scheduler

	entryID        string    // the periodic entry's id
	serverStarted  time.Time // when the server began processing
	schedulerStart time.Time
}

// run drives the whole scenario and returns the summary; failures are in
// the report, which the caller folds into the summary.
func run(ctx context.Context, cfg config, rep *report) *Summary {
	start := time.Now()
	sc := &scenario{
		cfg:   cfg,
		rep:   rep,
		rec:   newRecorder(),
		sum:   newSummary(cfg.tasks),
		plan:  buildPlan(cfg.tasks),
		conns: newConnections(cfg),
	}
	sc.sum.AsynqVersion = moduleVersion("github.com/hibiken/asynq")
	sc.sum.Timing.GoRedisVersion = moduleVersion("github.com/redis/go-redis/v9")
	sc.client = asynq.NewClient(sc.conns.producer)
	defer sc.client.Close()
	reads := asynq.NewInspector(sc.conns.dashboard)
	defer reads.Close()
	sc.insp, sc.ops = reads, reads
	if !sc.conns.shared {
		ops := asynq.NewInspector(sc.conns.operator)
		defer ops.Close()
		sc.ops = ops
	}

	sc.phases(ctx)
	sc.sum.Timing.TotalMS = time.Since(start).Milliseconds()
	return sc.sum
}

func (sc *scenario) phases(ctx context.Context) {
	t := time.Now()
	if !sc.conns.shared {
		sc.rep.logf("one login per component, one server per queue")
	}
	sc.rep.logf("enqueueing %d tasks to %s", len(sc.plan), sc.cfg.redisAddr)
	sc.enqueuePlan(ctx)
	sc.sum.Timing.EnqueueMS = time.Since(t).Milliseconds()
	if sc.sum.EnqueuedTotal < len(sc.plan) {
		// Every later phase waits for the whole plan; with part of it
		// missing they could only run into their time limits.
		sc.rep.logf("enqueue failed; skipping the rest of the scenario")
		return
	}

	sc.rep.logf("inspecting the queues before any server runs")
	sc.checkInitialState()

	if !sc.startWorkers() {
		return
	}
	defer sc.shutdown()

	sc.rep.logf("%d server(s) running; cancelling the long task", len(sc.srvs))
	sc.cancelLongTask(ctx)
	sc.runHeldRetries(ctx)
	sc.watchScheduler(ctx)
	sc.waitSettled(ctx)
	sc.sum.Timing.ProcessingMS = time.Since(sc.serverStarted).Milliseconds()

	sc.rep.logf("settled; checking the final state")
	sc.checkFinalState()
}

// startWorkers starts the scheduler first, so that its first heartbeat
// overlaps with the processing, then the server(s). The heartbeat comes 5 s
// after start in v0.24 and 10 s in v0.25+; SchedulerOpts.HeartbeatInterval
// would shorten it but does not exist in v0.24.
func (sc *scenario) startWorkers() bool {
	logger, level := asynqLogger(sc.cfg.quiet)
	sc.sched = asynq.NewScheduler(sc.conns.scheduler, &asynq.SchedulerOpts{Logger: logger, LogLevel: level})
	id, err := sc.sched.Register(periodicSpec,
		asynq.NewTask(typePeriodic, []byte("tick")), asynq.Queue(periodicQueue))
	if !sc.rep.expect(err == nil, "scheduler_register", "%v", err) {
		return false
	}
	sc.entryID = id
	if err := sc.sched.Start(); err != nil {
		sc.rep.failf("scheduler_start", "%v", err)
		return false
	}
	sc.schedulerStart = time.Now()

	for _, p := range sc.conns.servers() {
		srv := asynq.NewServer(p.redis, serverConfig(p.queues, logger, level))
		if err := srv.Start(sc.rec.mux()); err != nil {
			sc.rep.failf("server_start", "queues %v: %v", p.queues, err)
			close(sc.rec.release) // a started server may hold the long task
			sc.stopServers()
			sc.sched.Shutdown()
			return false
		}
		sc.srvs = append(sc.srvs, srv)
		sc.srvFor = append(sc.srvFor, p)
	}
	sc.serverStarted = time.Now()
	return true
}

// serverConfig is the one Config of every Server; only the queues differ.
func serverConfig(queues map[string]int, logger asynq.Logger, level asynq.LogLevel) asynq.Config {
	return asynq.Config{
		Concurrency:              serverConcurrency,
		Queues:                   queues,
		RetryDelayFunc:           retryDelayFor,
		DelayedTaskCheckInterval: delayedCheck,
		GroupGracePeriod:         groupGracePeriod,
		GroupMaxDelay:            groupMaxDelay,
		GroupMaxSize:             groupMaxSize,
		GroupAggregator:          aggregator(),
		ShutdownTimeout:          shutdownTimeout,
		Logger:                   logger,
		LogLevel:                 level,
	}
}

// retryDelayFor keeps retries fast, except for retry_hold tasks, which
// must stay in the retry set until the harness runs them.
func retryDelayFor(n int, err error, t *asynq.Task) time.Duration {
	if t.Type() == string(kindRetryHold) {
		return heldRetryDelay
	}
	return retryDelay
}

// stopServers shuts the started servers down side by side: each may wait
// up to a second for its idle processor, which adds up one after another.
func (sc *scenario) stopServers() {
	var wg sync.WaitGroup
	for _, srv := range sc.srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Shutdown()
		}()
	}
	wg.Wait()
}

// shutdown stops servers and scheduler, then checks that all removed
// themselves from Redis (their clear-state writes must get through).
func (sc *scenario) shutdown() {
	t := time.Now()
	close(sc.rec.release)
	sc.stopServers()
	sc.sched.Shutdown()
	sc.sum.Timing.ShutdownMS = time.Since(t).Milliseconds()
	sc.sum.Timing.SchedulerFirings = sc.rec.periodicCount()

	servers, err := sc.insp.Servers()
	if sc.rep.expect(err == nil, "servers_after_shutdown", "%v", err) {
		sc.sum.ServersAfterShutdown = len(servers)
		expectEqual(sc.rep, "servers_after_shutdown", len(servers), 0)
	}
	entries, err := sc.insp.SchedulerEntries()
	if sc.rep.expect(err == nil, "scheduler_entries_after_shutdown", "%v", err) {
		sc.sum.SchedulerEntriesAfterShutdown = len(entries)
		expectEqual(sc.rep, "scheduler_entries_after_shutdown", len(entries), 0)
	}
	sc.rep.logf("servers and scheduler shut down")
}
