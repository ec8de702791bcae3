// Command asynqbench is the Go side of scripts/bench.sh: the asynq
// workloads (real asynq Client and Server), an opener of idle
// authenticated connections, free ports, and the report.
//
// Every workload prints its figures as "name<TAB>value" lines on standard
// output; scripts/bench.sh labels them with the repetition, the target and
// the workload and collects them for "report".
//
// Usage:
//
//	asynqbench enqueue -addr A [-user U] [-pass P] [-n 50000] [-c 16] [-size 256] [-queue bench]
//	asynqbench batch   -addr A ... [-n 50000] [-c 16] [-batch 100]
//	asynqbench drain   -addr A ... [-n 50000] [-c 10]
//	asynqbench latency -addr A ... [-worker-user U -worker-pass P] [-rate 500] [-for 10s] [-c 10]
//	asynqbench idle    -addr A ... -stages 1000,10000
//	asynqbench ports   N
//	asynqbench report  -results results.tsv -meta meta.tsv -out report.md
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
)

const usage = "usage: asynqbench enqueue|batch|drain|latency|idle|ports|report [flags] (see main.go)"

// target is where a workload connects and as whom.
type target struct {
	addr, user, pass string
}

func targetFlags(fs *flag.FlagSet) *target {
	t := &target{}
	fs.StringVar(&t.addr, "addr", "127.0.0.1:6379", "Redis or proxy address")
	fs.StringVar(&t.user, "user", "", "user name for AUTH (empty: AUTH <password> or none)")
	fs.StringVar(&t.pass, "pass", "", "password for AUTH (empty: no AUTH)")
	return t
}

func main() {
	if len(os.Args) < 2 {
		fail("%s", usage)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "enqueue":
		err = runEnqueue(args)
	case "batch":
		err = runBatch(args)
	case "drain":
		err = runDrain(args)
	case "latency":
		err = runLatency(args)
	case "idle":
		err = runIdle(args)
	case "ports":
		err = runPorts(args)
	case "report":
		err = runReport(args)
	default:
		fail("unknown command %q; %s", cmd, usage)
	}
	if err != nil {
		fail("%s: %v", cmd, err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "asynqbench: "+format+"\n", args...)
	os.Exit(1)
}

// emit prints one figure for scripts/bench.sh.
func emit(name string, value float64) {
	fmt.Printf("%s\t%s\n", name, strconv.FormatFloat(value, 'f', -1, 64))
}

// runPorts prints N distinct free TCP ports of 127.0.0.1, one a line.
// Every listener is held until all are chosen, so the ports differ.
func runPorts(args []string) error {
	n := 1
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 {
			return fmt.Errorf("bad count %q", args[0])
		}
		n = v
	}
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		held = append(held, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
