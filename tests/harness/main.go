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
//	harness -redis 127.0.0.1:6379 [-username u -password p] [-tasks 2000]
//	        [-timeout 3m] [-out summary.json] [-quiet]
//	        [-tls-ca ca.pem [-tls-cert c.pem -tls-key k.pem] [-tls-server-name n]]
//	harness -redis ... -probe   (one enqueue; prints {"ok":…,"error":…})
//
// Exit status: 0 when every check passed, 1 when a check failed (the
// failures go to stderr and into the summary), 2 on bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

type config struct {
	redisAddr string
	username  string
	password  string
	tasks     int
	timeout   time.Duration
	out       string
	quiet     bool
	probe     bool
	tls       tlsFlags
}

// watchdogGrace is how long past -timeout the harness waits for a clean
// shutdown before it gives up and exits on its own.
const watchdogGrace = 30 * time.Second

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("harness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.redisAddr, "redis", "", "Redis (or proxy) address, host:port (required)")
	fs.StringVar(&cfg.username, "username", "", "Redis username; empty for none")
	fs.StringVar(&cfg.password, "password", "", "Redis password; empty for none")
	fs.IntVar(&cfg.tasks, "tasks", 2000, fmt.Sprintf("number of tasks to enqueue (at least %d)", minTasks))
	fs.DurationVar(&cfg.timeout, "timeout", 3*time.Minute, "bound for the whole run")
	fs.StringVar(&cfg.out, "out", "", "write the JSON summary to this file instead of stdout")
	fs.BoolVar(&cfg.quiet, "quiet", false, "print nothing but failures and the summary")
	fs.BoolVar(&cfg.probe, "probe", false, "only enqueue one task and print the outcome as JSON (exit 0 either way)")
	fs.StringVar(&cfg.tls.ca, "tls-ca", "", "PEM CA file: connect over TLS and trust this CA")
	fs.StringVar(&cfg.tls.cert, "tls-cert", "", "PEM client certificate (mutual TLS)")
	fs.StringVar(&cfg.tls.key, "tls-key", "", "PEM client key (mutual TLS)")
	fs.StringVar(&cfg.tls.serverName, "tls-server-name", "", "name to verify in the server certificate (default: the -redis host)")
	if err := fs.Parse(args); err != nil {
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
	return cfg, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "harness:", err)
		}
		os.Exit(2)
	}

	if cfg.probe {
		os.Exit(probe(cfg))
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
