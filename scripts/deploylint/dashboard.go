package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

// promql parses PromQL as Prometheus does by default.
var promql = parser.NewParser(parser.Options{})

// metricLabels are the series asynq-guard exposes (README, "Metrics")
// with their labels: a dashboard expression may name only these.
var metricLabels = map[string][]string{
	"asynq_guard_client_connections":              {"listener"},
	"asynq_guard_client_connections_total":        {"listener"},
	"asynq_guard_client_sessions":                 {"listener", "identity"},
	"asynq_guard_client_errors_total":             {"reason"},
	"asynq_guard_commands_total":                  {"command"},
	"asynq_guard_decisions_total":                 {"identity", "operation", "verdict"},
	"asynq_guard_refusals_total":                  {"identity", "operation", "reason"},
	"asynq_guard_auth_attempts_total":             {"listener", "result"},
	"asynq_guard_limit_hits_total":                {"identity", "queue", "limit", "scope"},
	"asynq_guard_shared_limit_failures_total":     {"limit", "outcome"},
	"asynq_guard_integrity_failures_total":        {"queue", "reason", "path"},
	"asynq_guard_integrity_archived_total":        {"queue", "outcome"},
	"asynq_guard_integrity_signed_total":          {"queue", "how"},
	"asynq_guard_queue_tasks":                     {"queue"},
	"asynq_guard_upstream_latency_seconds_bucket": {"le"},
	"asynq_guard_upstream_latency_seconds_sum":    {},
	"asynq_guard_upstream_latency_seconds_count":  {},
	"asynq_guard_upstream_errors_total":           {"kind"},
	"asynq_guard_policy_reloads_total":            {"result"},
	"asynq_guard_policy_info":                     {"sha256"},
	"asynq_guard_tls_handshake_failures_total":    {"listener"},
	"asynq_guard_tls_reloads_total":               {"result"},
	"process_cpu_seconds_total":                   {},
	"process_resident_memory_bytes":               {},
	"process_virtual_memory_bytes":                {},
	"process_open_fds":                            {},
	"process_max_fds":                             {},
	"process_start_time_seconds":                  {},
	"process_threads":                             {},
	"up":                                          {},
}

// Labels Prometheus's service discovery adds to every series.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "service", "endpoint"}

// grafanaVar matches Grafana's variable forms: $name, ${name}, ${name:fmt}, [[name]].
var grafanaVar = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(:[a-z]+)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// substitute replaces Grafana variables by something PromQL accepts at the
// same place: a duration for the interval variables, a regex-safe word for
// the others (which stand inside label matchers).
func substitute(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := strings.Trim(v, "${}[]")
		name, _, _ = strings.Cut(name, ":")
		switch name {
		case "__rate_interval", "__interval", "__range", "interval":
			return "5m"
		}
		return "value"
	})
}

type panel struct {
	ID         int                         `json:"id"`
	Type       string                      `json:"type"`
	Title      string                      `json:"title"`
	GridPos    *struct{ H, W int }         `json:"gridPos"`
	Datasource *struct{ Type, UID string } `json:"datasource"`
	Targets    []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name, Type string
			Query      any
			Datasource *struct{ Type, UID string }
		}
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

func checkDashboard(p *problems, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		p.add(file, "%v", err)
		return
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		p.add(file, "not JSON: %v", err)
		return
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		p.add(file, "uid, title and schemaVersion are required")
	}
	datasource := ""
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "datasource" && v.Query == "prometheus" {
			datasource = v.Name
		}
	}
	if datasource == "" {
		p.add(file, "no template variable of type datasource for prometheus")
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		where := fmt.Sprintf("%s: variable %s", file, v.Name)
		if v.Datasource == nil || v.Datasource.UID != "${"+datasource+"}" {
			p.add(where, "datasource must be ${%s}", datasource)
		}
		query := fmt.Sprint(v.Query)
		if m, ok := v.Query.(map[string]any); ok {
			query = fmt.Sprint(m["query"])
		}
		checkLabelValues(p, where, query)
	}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, pn := range panels {
			where := fmt.Sprintf("%s: panel %d %q", file, pn.ID, pn.Title)
			if pn.ID == 0 || ids[pn.ID] {
				p.add(where, "panel ids must be unique and non-zero")
			}
			ids[pn.ID] = true
			if pn.GridPos == nil || pn.GridPos.W == 0 || pn.GridPos.H == 0 || pn.GridPos.W > 24 {
				p.add(where, "gridPos needs w (1..24) and h")
			}
			walk(pn.Panels)
			if pn.Type == "row" || pn.Type == "text" {
				continue
			}
			if pn.Datasource == nil || pn.Datasource.UID != "${"+datasource+"}" {
				p.add(where, "datasource must be ${%s}", datasource)
			}
			if len(pn.Targets) == 0 {
				p.add(where, "no targets")
			}
			for _, t := range pn.Targets {
				for _, m := range grafanaVar.FindAllStringSubmatch(t.Expr, -1) {
					name := m[1] + m[3] + m[4]
					if !strings.HasPrefix(name, "__") && !vars[name] {
						p.add(where, "target %s: no template variable %q", t.RefID, name)
					}
				}
				checkExpr(p, fmt.Sprintf("%s: target %s", where, t.RefID), t.Expr)
			}
		}
	}
	walk(d.Panels)
}

var labelValues = regexp.MustCompile(`^label_values\(\s*([^,]+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$`)

// checkLabelValues checks a variable's label_values(selector, label) query.
func checkLabelValues(p *problems, where, query string) {
	m := labelValues.FindStringSubmatch(strings.TrimSpace(query))
	if m == nil {
		p.add(where, "query %q is not label_values(selector, label)", query)
		return
	}
	checkExpr(p, where, m[1])
	sel, err := promql.ParseExpr(substitute(m[1]))
	if err != nil {
		return
	}
	if vs, ok := sel.(*parser.VectorSelector); ok && !hasLabel(vs.Name, m[2]) {
		p.add(where, "metric %s has no label %q", vs.Name, m[2])
	}
}

func hasLabel(metric, label string) bool {
	for _, l := range append(metricLabels[metric], targetLabels...) {
		if l == label {
			return true
		}
	}
	return false
}

// checkExpr parses a PromQL expression and checks every metric it names,
// and every label it matches on, against metricLabels.
func checkExpr(p *problems, where, expr string) {
	parsed, err := promql.ParseExpr(substitute(expr))
	if err != nil {
		p.add(where, "PromQL %q: %v", expr, err)
		return
	}
	parser.Inspect(parsed, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if _, known := metricLabels[vs.Name]; !known {
			p.add(where, "unknown metric %q", vs.Name)
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name != "__name__" && !hasLabel(vs.Name, m.Name) {
				p.add(where, "metric %s has no label %q", vs.Name, m.Name)
			}
		}
		return nil
	})
}
