// Command signed-enqueue enqueues tasks through asynq's Client, signing each
// one with asynqguard's Signer (or not, with -unsigned). asynq-guard's
// integration tests use it as a producer in check mode.
//
// Usage:
//
//	ASYNQ_GUARD_KEY=... signed-enqueue -addr 127.0.0.1:6380 -queue default \
//	    -type demo:task -count 10 -key-id k1 -key-env ASYNQ_GUARD_KEY -json
//
// With -json it prints one line
// {"attempted":N,"accepted":N,"refused":N,"errors":[...]} (errors: the
// first few Enqueue errors) and exits 0 once every task was attempted,
// whatever the outcome. Without -json it prints a summary and exits 1 if
// any task was refused. Bad flags or keys exit 2.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/hibiken/asynq"

	"github.com/asynq-guard/asynq-guard/sdk/go/asynqguard"
)

// maxErrors is how many error strings the summary keeps.
const maxErrors = 5

// summary is the -json output line.
type summary struct {
	Attempted int      `json:"attempted"`
	Accepted  int      `json:"accepted"`
	Refused   int      `json:"refused"`
	Errors    []string `json:"errors"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "Redis (or asynq-guard) address host:port")
	username := flag.String("username", "", "Redis ACL user name")
	password := flag.String("password", "", "Redis password")
	queue := flag.String("queue", "default", "queue to enqueue into")
	typename := flag.String("type", "asynq-guard:test", "task type")
	count := flag.Int("count", 1, "number of tasks to enqueue")
	payloadBytes := flag.Int("payload-bytes", 16, "payload size in bytes")
	keyID := flag.String("key-id", "", "id of the signing key")
	keyEnv := flag.String("key-env", "", "environment variable holding the signing key secret")
	unsigned := flag.Bool("unsigned", false, "enqueue without signing")
	asJSON := flag.Bool("json", false, "print a JSON summary line")
	processIn := flag.Duration("process-in", 0, "schedule the tasks this far ahead (0: pending now)")
	flag.Parse()

	if *count < 0 || *payloadBytes < 0 {
		fail("-count and -payload-bytes must not be negative")
	}
	var signer *asynqguard.Signer
	if !*unsigned {
		if *keyID == "" || *keyEnv == "" {
			fail("-key-id and -key-env are required unless -unsigned is given")
		}
		key, err := asynqguard.KeyFromEnv(*keyID, *keyEnv)
		if err != nil {
			fail(err.Error())
		}
		if signer, err = asynqguard.NewSigner(key); err != nil {
			fail(err.Error())
		}
	}

	client := asynq.NewClient(asynq.RedisClientOpt{Addr: *addr, Username: *username, Password: *password})
	defer client.Close()

	s := summary{Errors: []string{}}
	for i := 0; i < *count; i++ {
		task := asynq.NewTask(*typename, payload(i, *payloadBytes))
		opts := []asynq.Option{asynq.Queue(*queue)}
		if *processIn > 0 {
			opts = append(opts, asynq.ProcessIn(*processIn))
		}
		s.Attempted++
		var err error
		if signer != nil {
			task, opts, err = signer.Sign(task, opts...)
		}
		if err == nil {
			_, err = client.Enqueue(task, opts...)
		}
		if err != nil {
			s.Refused++
			if len(s.Errors) < maxErrors {
				s.Errors = append(s.Errors, err.Error())
			}
			continue
		}
		s.Accepted++
	}

	if *asJSON {
		line, _ := json.Marshal(s)
		fmt.Println(string(line))
		return
	}
	fmt.Printf("attempted %d, accepted %d, refused %d\n", s.Attempted, s.Accepted, s.Refused)
	for _, e := range s.Errors {
		fmt.Println("error:", e)
	}
	if s.Refused > 0 {
		os.Exit(1)
	}
}

// payload returns n bytes: "task-<i>:" followed by 'x' padding, cut to n.
func payload(i, n int) []byte {
	p := make([]byte, 0, n)
	p = append(p, fmt.Sprintf("task-%d:", i)...)
	for len(p) < n {
		p = append(p, 'x')
	}
	return p[:n]
}

// fail reports a usage or setup error and exits 2.
func fail(msg string) {
	fmt.Fprintln(os.Stderr, "signed-enqueue:", msg)
	os.Exit(2)
}
