// Command harness exercises real asynq (Client, Server, Scheduler and
// Inspector) against one Redis address, checks that everything asynq
// promises happened, and prints a JSON summary.
//
// The address may be redis-server itself or asynq-guard in front of it;
// the harness does not care. It sends nothing but what asynq sends, and
// expects a fresh, empty Redis. The summary's counts are deterministic, so
// a direct run and a proxied run can be compared field by field, leaving
// out "timing" and "asynq_version".
//
// Usage:
//
//	harness -redis 127.0.0.1:6379 [-username u -password p | -logins logins.json]
//	        [-tasks 2000] [-timeout 3m] [-out summary.json] [-quiet]
//	        [-tls-ca ca.pem [-tls-cert c.pem -tls-key k.pem] [-tls-server-name n]]
//	harness -redis ... -probe [-probe-queue probe] [-probe-type probe] [-probe-payload-bytes 5]
//	        (one enqueue; prints {"ok":…,"error":…,"id":…})
//	harness -redis ... -flood [-flood-queue q] [-flood-type t] [-flood-rate 100] [-flood-for 10s]
//	        [-flood-producers 4]
//	        (enqueues at a steady rate; prints accepted, limited and other errors)
//	harness -redis ... -worker-check -worker-queues A,B [-worker-for 5s]
//	        (one Server on those queues; prints what it processed and the
//	        errors asynq logged)
//	harness -redis ... -dashboard-check -queue Q -task-id ID [-entry-id E] [-group G]
//	        (every Inspector read and mutation once; prints each outcome)
//	harness -redis ... -enqueue-batch [-batch-queue q] [-batch-type t] [-batch-count 10]
//	        [-batch-payload prefix] [-batch-process-in 0]
//	        (enqueues a batch; prints each task's id and payload)
//	harness -redis ... -handle -handle-queues A,B [-handle-expect N] [-handle-timeout 1m]
//	        [-handle-settle 2s] [-handle-delayed-check 1s]
//	        (one Server until N tasks were handled and the queues are drained;
//	        prints every task it handled)
//	harness -redis ... -list-tasks -list-queue Q [-list-states pending,archived] [-list-ids a,b]
//	        (Inspector listings and task infos; prints each task with its last error)
//	        see tasks.go for the three modes above
//
// -logins runs the scenario with one login per component: producer
// (Client), scheduler, dashboard (Inspector reads), operator (Inspector
// mutations) and one Server per queue under "workers"; see logins.go.
//
// Exit status of the scenario: 0 when every check passed, 1 when a check
// failed (the failures go to stderr and into the summary), 2 on bad
// flags. The modes exit 0 whenever they ran, whatever their calls
// returned, and 2 on bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

// watchdogGrace is how long past -timeout the harness waits for a clean
// shutdown before it gives up and exits on its own.
const watchdogGrace = 30 * time.Second

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "harness:", err)
		}
		os.Exit(2)
	}

	switch {
	case cfg.probe:
		os.Exit(probe(cfg))
	case cfg.flood:
		os.Exit(flood(cfg))
	case cfg.workerCheck:
		os.Exit(workerCheck(cfg))
	case cfg.dashboardCheck:
		os.Exit(dashboardCheck(cfg))
	case cfg.enqueueBatch:
		os.Exit(enqueueBatch(cfg))
	case cfg.handle:
		os.Exit(handle(cfg))
	case cfg.listTasks:
		os.Exit(listTasks(cfg))
	}

	rep := newReport(cfg.quiet)
	watchdog := time.AfterFunc(cfg.timeout+watchdogGrace, func() { giveUp(cfg, rep) })
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	sum := run(ctx, cfg, rep)
	cancel()
	watchdog.Stop()

	os.Exit(finish(cfg, rep, sum))
}

// finish folds the failures into the summary, writes it and returns the
// exit status.
func finish(cfg config, rep *report, sum *Summary) int {
	sum.Failures = rep.snapshot()
	sum.OK = len(sum.Failures) == 0
	if err := writeSummary(cfg.out, sum); err != nil {
		fmt.Fprintln(os.Stderr, "harness: writing summary:", err)
		return 1
	}
	if !sum.OK {
		fmt.Fprintf(os.Stderr, "harness: %d failure(s)\n", len(sum.Failures))
		return 1
	}
	rep.logf("all checks passed")
	return 0
}

// giveUp runs when the scenario overran its timeout by watchdogGrace,
// typically because a shutdown blocked on an unresponsive Redis. It still
// writes a summary, holding only the failures seen so far.
func giveUp(cfg config, rep *report) {
	rep.failf("watchdog", "run still going %v after the %v timeout", watchdogGrace, cfg.timeout)
	sum := newSummary(cfg.tasks)
	sum.AsynqVersion = moduleVersion("github.com/hibiken/asynq")
	os.Exit(finish(cfg, rep, sum))
}
