package main

// The report collects failed checks and prints progress. Checks never stop
// the run: the harness keeps going so one run shows every problem, and the
// summary is written even when something failed.

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// failuresPerCheck caps how many failures of one check are kept and
// printed; a broken path would otherwise repeat the same line per task.
const failuresPerCheck = 10

type report struct {
	mu       sync.Mutex
	failures []string
	perCheck map[string]int // check → failures, including dropped ones
	quiet    bool
	start    time.Time
}

func newReport(quiet bool) *report {
	return &report{
		failures: []string{},
		perCheck: map[string]int{},
		quiet:    quiet,
		start:    time.Now(),
	}
}

// failf records a failed check as "check: reason" and says so on stderr
// right away, so a hung run still shows what went wrong first.
func (r *report) failf(check, format string, args ...any) {
	msg := check + ": " + fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.perCheck[check]++
	keep := r.perCheck[check] <= failuresPerCheck
	if keep {
		r.failures = append(r.failures, msg)
	}
	r.mu.Unlock()
	if keep {
		fmt.Fprintln(os.Stderr, "harness: FAIL", msg)
	}
}

// expect records a failure when ok is false and returns ok.
func (r *report) expect(ok bool, check, format string, args ...any) bool {
	if !ok {
		r.failf(check, format, args...)
	}
	return ok
}

// expectEqual compares two comparable values and names both on failure.
func expectEqual[T comparable](r *report, check string, got, want T) bool {
	return r.expect(got == want, check, "got %v, want %v", got, want)
}

// logf prints progress with the elapsed time, unless -quiet.
func (r *report) logf(format string, args ...any) {
	if r.quiet {
		return
	}
	elapsed := time.Since(r.start).Round(time.Millisecond)
	fmt.Fprintf(os.Stderr, "harness: [%v] %s\n", elapsed, fmt.Sprintf(format, args...))
}

// snapshot copies the failures recorded so far, with one line per check
// that had more than were kept.
func (r *report) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]string{}, r.failures...)
	for _, check := range sortedKeys(r.perCheck) {
		if n := r.perCheck[check]; n > failuresPerCheck {
			out = append(out, fmt.Sprintf("%s: %d more failures not shown", check, n-failuresPerCheck))
		}
	}
	return out
}
