package main

// -probe: one enqueue, for tests that check what a refused client is
// told. -probe-queue and -probe-type pick the queue and task type, so a
// test can try exactly the enqueue a grant allows or forbids.

import (
	"encoding/json"
	"os"
	"strings"

	"github.com/hibiken/asynq"
)

// probe enqueues one task and prints whether asynq accepted it and, if
// not, the error asynq returned. It exits 0 either way; only a failure to
// print is an error.
func probe(cfg config) int {
	client := asynq.NewClient(redisOpt(cfg, login{cfg.username, cfg.password}))
	defer client.Close()
	out := struct {
		OK    bool   `json:"ok"`
		Error string `json:"error,omitempty"`
		ID    string `json:"id,omitempty"`
	}{}
	task := asynq.NewTask(cfg.probeType, []byte(strings.Repeat("p", cfg.probePayload)))
	info, err := client.Enqueue(task, asynq.Queue(cfg.probeQueue))
	if err != nil {
		out.Error = err.Error()
	} else {
		out.OK, out.ID = true, info.ID
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}
