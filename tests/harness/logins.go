package main

// -logins FILE: one login per asynq component, so a run can show that each
// role does its whole job with nothing but its own grants. The file is
//
//	{"producer":  {"username": "u", "password": "p"},
//	 "scheduler": {...}, "dashboard": {...}, "operator": {...},
//	 "workers":   {"critical": {...}, "default": {...}, "low": {...}, "periodic": {...}}}
//
// Every role must be present and every queue the scenario uses must have
// exactly one worker login: a missing one would leave part of the scenario
// without anyone allowed to do it, and the run would only time out.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// login is one Redis (or proxy) username and password.
type login struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// logins is the parsed -logins file. The roles are pointers so that a
// role left out of the file is told apart from one with empty strings.
type logins struct {
	Producer  *login           `json:"producer"`
	Scheduler *login           `json:"scheduler"`
	Dashboard *login           `json:"dashboard"`
	Operator  *login           `json:"operator"`
	Workers   map[string]login `json:"workers"` // queue → login of that queue's server
}

// scenarioQueues are all queues the scenario puts tasks in.
func scenarioQueues() []string {
	return append(append([]string{}, workQueues...), periodicQueue)
}

// loadLogins reads and checks a -logins file. Unknown fields are errors,
// since a misspelt role would otherwise silently run without its login.
func loadLogins(path string) (*logins, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading -logins: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var l logins
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("-logins %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("-logins %s: more than one JSON value", path)
	}
	if err := l.check(); err != nil {
		return nil, fmt.Errorf("-logins %s: %w", path, err)
	}
	return &l, nil
}

func (l *logins) check() error {
	roles := []struct {
		name  string
		login *login
	}{{"producer", l.Producer}, {"scheduler", l.Scheduler}, {"dashboard", l.Dashboard}, {"operator", l.Operator}}
	for _, r := range roles {
		if r.login == nil {
			return fmt.Errorf("no %q login", r.name)
		}
	}
	var missing []string
	for _, q := range scenarioQueues() {
		if _, ok := l.Workers[q]; !ok {
			missing = append(missing, q)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("\"workers\" has no login for queue(s) %s; the scenario uses %s",
			strings.Join(missing, ", "), strings.Join(scenarioQueues(), ", "))
	}
	// A server for a queue the scenario never fills would be harmless, but
	// such an entry is almost certainly a typo for one that is needed.
	used := map[string]bool{}
	for _, q := range scenarioQueues() {
		used[q] = true
	}
	var extra []string
	for q := range l.Workers {
		if !used[q] {
			extra = append(extra, q)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return errors.New("\"workers\" names queue(s) the scenario does not use: " + strings.Join(extra, ", "))
	}
	return nil
}
