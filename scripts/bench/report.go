package main

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// The report: medians over the repetitions with their min–max, ratios of
// asynq-guard to direct Redis and to HAProxy, and the goals of issue 8,
// reported as met or not met (never asserted).

const (
	direct  = "direct"
	haproxy = "haproxy"
	guard   = "guard"
)

// results[target][workload/metric] holds one value per repetition,
// results[target]["rep:workload/metric"] the repetition of each.
type results struct {
	values map[string]map[string][]float64
	byRep  map[string]map[string]map[string]float64
}

func readResults(path string) (*results, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &results{values: map[string]map[string][]float64{}, byRep: map[string]map[string]map[string]float64{}}
	s := bufio.NewScanner(f)
	line := 0
	for s.Scan() {
		line++
		fields := strings.Split(s.Text(), "\t")
		if len(fields) != 5 {
			return nil, fmt.Errorf("%s:%d: want rep, target, workload, metric, value", path, line)
		}
		rep, target, key := fields[0], fields[1], fields[2]+"/"+fields[3]
		v, err := strconv.ParseFloat(fields[4], 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		if r.values[target] == nil {
			r.values[target] = map[string][]float64{}
			r.byRep[target] = map[string]map[string]float64{}
		}
		r.values[target][key] = append(r.values[target][key], v)
		if r.byRep[target][key] == nil {
			r.byRep[target][key] = map[string]float64{}
		}
		r.byRep[target][key][rep] = v
	}
	return r, s.Err()
}

// stat is a median with the range it came from.
type stat struct {
	med, lo, hi float64
	ok          bool
}

func summarize(vs []float64) stat {
	if len(vs) == 0 {
		return stat{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return stat{med: med, lo: s[0], hi: s[n-1], ok: true}
}

func (r *results) stat(target, key string) stat {
	return summarize(r.values[target][key])
}

// diff is a minus b, repetition by repetition (the targets of one
// repetition ran next to each other).
func (r *results) diff(a, b, key string) stat {
	var ds []float64
	for rep, va := range r.byRep[a][key] {
		if vb, ok := r.byRep[b][key][rep]; ok {
			ds = append(ds, va-vb)
		}
	}
	return summarize(ds)
}

// num formats a figure with digits suited to its size.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case a >= 1000:
		return thousands(int64(math.Round(v)))
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func thousands(n int64) string {
	neg := n < 0
	if neg {
		n = -n
	}
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func (s stat) String() string {
	if !s.ok {
		return "n/a"
	}
	if s.lo == s.hi {
		return num(s.med)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.med), num(s.lo), num(s.hi))
}

func ratio(a, b stat) string {
	if !a.ok || !b.ok || b.med == 0 {
		return "n/a"
	}
	return strconv.FormatFloat(a.med/b.med, 'f', 2, 64)
}

// goal is one of issue 8's goals for a row.
type goal struct {
	text string
	met  func(d, h, g stat) bool
}

func atLeastDirect(f float64) *goal {
	return &goal{fmt.Sprintf("≥ %.1f × direct", f), func(d, _, g stat) bool { return g.med >= f*d.med }}
}

var atLeastHAProxy = &goal{"≥ HAProxy", func(_, h, g stat) bool { return g.med >= h.med }}

func below(limit float64, unit string) *goal {
	return &goal{fmt.Sprintf("< %s %s", num(limit), unit), func(_, _, g stat) bool { return g.med < limit }}
}

func verdict(gl *goal, d, h, g stat) (string, string) {
	if gl == nil {
		return "", ""
	}
	if !g.ok {
		return gl.text, "n/a"
	}
	if gl.met(d, h, g) {
		return gl.text, "met"
	}
	return gl.text, "**not met**"
}

type row struct {
	label, key string
	goal       *goal
}

var rbSets = []struct{ workload, what string }{
	{"rb-1c", "1 conn"},
	{"rb-50c", "50 conns"},
	{"rb-p16", "50 conns, pipeline 16"},
	{"rb-64k", "50 conns, 64 KiB values"},
	{"rb-1000c", "1,000 conns"},
}

func throughputRows() []row {
	var rows []row
	for _, set := range rbSets {
		g := atLeastHAProxy
		if set.workload == "rb-p16" {
			g = atLeastDirect(0.6)
		}
		for _, cmd := range []string{"GET", "SET"} {
			lc := strings.ToLower(cmd)
			rows = append(rows, row{fmt.Sprintf("redis-benchmark %s, %s (req/s)", cmd, set.what), set.workload + "/" + lc + "_rps", g})
			if set.workload == "rb-1c" {
				rows = append(rows,
					row{fmt.Sprintf("redis-benchmark %s, 1 conn, p50 (µs)", cmd), "rb-1c/" + lc + "_p50_us", nil},
					row{fmt.Sprintf("redis-benchmark %s, 1 conn, p99 (µs)", cmd), "rb-1c/" + lc + "_p99_us", nil})
			}
		}
	}
	return append(rows,
		row{"asynq enqueue, 16 goroutines (tasks/s)", "enqueue/tps", atLeastDirect(0.9)},
		row{"asynq enqueue, p50 (µs)", "enqueue/p50_us", nil},
		row{"asynq enqueue, p99 (µs)", "enqueue/p99_us", nil},
		row{"asynq batch enqueue, pipelines of 100 (tasks/s)", "batch/tps", atLeastDirect(0.9)},
		row{"asynq batch enqueue, p50 per batch (µs)", "batch/batch_p50_us", nil},
		row{"asynq batch enqueue, p99 per batch (µs)", "batch/batch_p99_us", nil},
		row{"asynq drain, Concurrency 10 (tasks/s)", "drain10/tps", atLeastDirect(0.9)},
		row{"asynq drain, Concurrency 50 (tasks/s)", "drain50/tps", atLeastDirect(0.9)},
		row{"asynq enqueue to handler, p50 (µs)", "e2e/p50_us", nil},
		row{"asynq enqueue to handler, p99 (µs)", "e2e/p99_us", nil},
	)
}

var cpuRows = []struct{ label, workload string }{
	{"redis-benchmark GET+SET, 1 conn", "rb-1c"},
	{"redis-benchmark GET+SET, 50 conns", "rb-50c"},
	{"redis-benchmark GET+SET, pipeline 16", "rb-p16"},
	{"redis-benchmark GET+SET, 64 KiB values", "rb-64k"},
	{"redis-benchmark GET+SET, 1,000 conns", "rb-1000c"},
	{"asynq enqueue", "enqueue"},
	{"asynq batch enqueue", "batch"},
	{"asynq drain, Concurrency 10", "drain10"},
	{"asynq drain, Concurrency 50", "drain50"},
	{"asynq enqueue to handler", "e2e"},
}

func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("results", "results.tsv", "figures: rep, target, workload, metric, value")
	meta := fs.String("meta", "", "setup lines: key<TAB>value")
	out := fs.String("out", "report.md", "markdown report")
	fs.Parse(args)
	r, err := readResults(*in)
	if err != nil {
		return err
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	w("# asynq-guard benchmark\n\n")
	if *meta != "" {
		text, err := os.ReadFile(*meta)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimSpace(string(text)), "\n") {
			k, v, _ := strings.Cut(line, "\t")
			w("- %s: %s\n", k, v)
		}
		w("\n")
	}
	w("Cells: median over the repetitions (min–max). Ratios are of medians. " +
		"Goals are reported, not asserted.\n\n")

	w("## Throughput and latency\n\n")
	w("| workload | direct | HAProxy | asynq-guard | guard / direct | guard / HAProxy | goal | |\n")
	w("|---|---|---|---|---|---|---|---|\n")
	for _, rw := range throughputRows() {
		d, h, g := r.stat(direct, rw.key), r.stat(haproxy, rw.key), r.stat(guard, rw.key)
		gt, met := verdict(rw.goal, d, h, g)
		w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.label, d, h, g, ratio(g, d), ratio(g, h), gt, met)
	}

	w("\n## Added latency at one connection (redis-benchmark, µs)\n\n")
	w("Differences of the percentiles, repetition by repetition.\n\n")
	w("| percentile | asynq-guard − direct | HAProxy − direct | asynq-guard − HAProxy | goal | |\n")
	w("|---|---|---|---|---|---|\n")
	for _, cmd := range []string{"get", "set"} {
		for _, p := range []string{"p50", "p99"} {
			key := "rb-1c/" + cmd + "_" + p + "_us"
			gd := r.diff(guard, direct, key)
			var gl *goal
			if p == "p99" {
				gl = below(100, "µs")
			}
			gt, met := verdict(gl, stat{}, stat{}, gd)
			w("| %s %s added | %s | %s | %s | %s | %s |\n", strings.ToUpper(cmd), p, gd,
				r.diff(haproxy, direct, key), r.diff(guard, haproxy, key), gt, met)
		}
	}

	w("\n## CPU time per operation (µs, utime+stime from /proc)\n\n")
	w("| workload | HAProxy | asynq-guard | guard / HAProxy | Redis, direct | Redis, via HAProxy | Redis, via asynq-guard |\n")
	w("|---|---|---|---|---|---|---|\n")
	for _, c := range cpuRows {
		h, g := r.stat(haproxy, c.workload+"/mid_cpu_us"), r.stat(guard, c.workload+"/mid_cpu_us")
		w("| %s | %s | %s | %s | %s | %s | %s |\n", c.label, h, g, ratio(g, h),
			r.stat(direct, c.workload+"/redis_cpu_us"), r.stat(haproxy, c.workload+"/redis_cpu_us"),
			r.stat(guard, c.workload+"/redis_cpu_us"))
	}

	w("\n## Resident memory (VmRSS)\n\n")
	w("The process the clients connect to: Redis for direct.\n\n")
	w("| state | Redis (direct) | HAProxy | asynq-guard | guard / HAProxy | goal | |\n")
	w("|---|---|---|---|---|---|---|\n")
	mib := func(target, metric string) stat {
		s := r.stat(target, "mem/"+metric)
		s.med, s.lo, s.hi = s.med/1024, s.lo/1024, s.hi/1024
		return s
	}
	perConn := func(target string) stat {
		idle, open, n := r.stat(target, "mem/rss_idle_kib"), r.stat(target, "mem/rss_n_kib"), r.stat(target, "mem/n")
		if !idle.ok || !open.ok || !n.ok || n.med == 0 {
			return stat{}
		}
		v := (open.med - idle.med) / n.med
		return stat{med: v, lo: v, hi: v, ok: true}
	}
	for _, m := range []struct{ label, metric string }{
		{"idle, no connections (MiB)", "rss_idle_kib"},
		{"1,000 idle connections open (MiB)", "rss_1000_kib"},
		{"all idle connections open (MiB)", "rss_n_kib"},
		{"peak over the whole run, VmHWM (MiB)", "hwm_kib"},
	} {
		d, h, g := mib(direct, m.metric), mib(haproxy, m.metric), mib(guard, m.metric)
		w("| %s | %s | %s | %s | %s | | |\n", m.label, d, h, g, ratio(g, h))
	}
	d, h, g := perConn(direct), perConn(haproxy), perConn(guard)
	gt, met := verdict(below(16, "KiB"), d, h, g)
	w("| per idle connection (KiB) | %s | %s | %s | %s | %s | %s |\n", d, h, g, ratio(g, h), gt, met)

	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	return nil
}
