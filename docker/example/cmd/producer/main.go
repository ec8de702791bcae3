// Command producer enqueues -count tasks of type email:send to the
// queue "default" through asynq-guard, then exits.
//
// Every flag has an environment variable as its default:
//
//	-addr      REDIS_ADDR      the proxy (default asynq-guard:6380)
//	-username  REDIS_USERNAME  identity (default producer)
//	-password  REDIS_PASSWORD  the identity's secret
//	-count     TASKS           tasks to enqueue (default 20)
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"

	"github.com/hibiken/asynq"

	"asynq-guard/example/internal/env"
)

// Email is the payload of an email:send task.
type Email struct {
	To string `json:"to"`
	N  int    `json:"n"`
}

func main() {
	var r env.Redis
	flag.StringVar(&r.Addr, "addr", env.String("REDIS_ADDR", "asynq-guard:6380"), "asynq-guard address")
	flag.StringVar(&r.Username, "username", env.String("REDIS_USERNAME", "producer"), "identity")
	flag.StringVar(&r.Password, "password", env.String("REDIS_PASSWORD", ""), "the identity's secret")
	count := flag.Int("count", env.Int("TASKS", 20), "tasks to enqueue")
	flag.Parse()

	client := asynq.NewClient(r.Opt())
	defer client.Close()
	for n := 1; n <= *count; n++ {
		payload, err := json.Marshal(Email{To: fmt.Sprintf("user-%d@example.com", n), N: n})
		if err != nil {
			log.Fatal(err)
		}
		// A refusal by the proxy comes back here as asynq's error, for
		// example "NOPERM ..." for a queue or type not granted.
		if _, err := client.Enqueue(asynq.NewTask(env.TaskType, payload), asynq.Queue(env.Queue)); err != nil {
			log.Fatalf("enqueue %s #%d: %v", env.TaskType, n, err)
		}
	}
	fmt.Printf("producer: enqueued %d %s tasks to queue %s\n", *count, env.TaskType, env.Queue)
}
