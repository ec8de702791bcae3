package asynqguard

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

const secretPayload = "SECRET-PAYLOAD-do-not-log"

func TestMiddlewareWithoutTaskContext(t *testing.T) {
	key := testKey(t, "k1")
	signed, _, err := mustSigner(t, key).Sign(asynq.NewTask("t", []byte(secretPayload)))
	if err != nil {
		t.Fatal(err)
	}
	called := false
	h := VerifyMiddleware(key)(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		called = true
		return nil
	}))
	err = h.ProcessTask(context.Background(), signed)
	if called || !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, ErrRejected) {
		t.Fatalf("called=%v err=%v", called, err)
	}
}

func TestNewVerifierErrors(t *testing.T) {
	k := testKey(t, "k1")
	if _, err := NewVerifier(); err == nil {
		t.Error("no keys accepted")
	}
	if _, err := NewVerifier(k, k); err == nil {
		t.Error("duplicate key ids accepted")
	}
	if _, err := NewVerifier(Key{ID: "x", Secret: []byte("short")}); err == nil {
		t.Error("short key accepted")
	}
	defer func() {
		if recover() == nil {
			t.Error("VerifyMiddleware did not panic on an invalid key")
		}
	}()
	VerifyMiddleware(Key{ID: "bad id", Secret: []byte(strings.Repeat("s", 32))})
}

func mustSigner(t *testing.T, k Key) *Signer {
	t.Helper()
	s, err := NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMiddlewareWithServer runs a real asynq Server behind VerifyMiddleware
// and checks which tasks reach the handler.
func TestMiddlewareWithServer(t *testing.T) {
	addr := testRedis(t)
	redisOpt := asynq.RedisClientOpt{Addr: addr}
	client := asynq.NewClient(redisOpt)
	defer client.Close()

	k1, k2 := testKey(t, "k1"), testKey(t, "k2")
	wrongSecret, err := NewKey("k1", []byte(strings.Repeat("w", 40)))
	if err != nil {
		t.Fatal(err)
	}
	s1, s2, sWrong, sUnknown := mustSigner(t, k1), mustSigner(t, k2), mustSigner(t, wrongSecret), mustSigner(t, testKey(t, "k9"))

	type outcome struct {
		handled bool
		err     error
	}
	var (
		mu       sync.Mutex
		outcomes = map[string]outcome{}
	)
	handler := asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		mu.Lock()
		outcomes[id] = outcome{handled: true}
		mu.Unlock()
		return nil
	})
	verified := VerifyMiddleware(k1, k2)(handler)
	recorder := asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		err := verified.ProcessTask(ctx, task)
		if err != nil {
			id, _ := asynq.GetTaskID(ctx)
			mu.Lock()
			outcomes[id] = outcome{err: err}
			mu.Unlock()
		}
		return err
	})

	srv := asynq.NewServer(redisOpt, asynq.Config{
		Concurrency: 4,
		Queues:      map[string]int{"mw": 1, "other": 1},
		LogLevel:    asynq.FatalLevel,
	})
	if err := srv.Start(recorder); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	payload := []byte(secretPayload)
	newTask := func() *asynq.Task {
		return asynq.NewTaskWithHeaders("mw:task", payload, map[string]string{"trace": "t1"})
	}
	type enqueueCase struct {
		name       string
		task       *asynq.Task
		opts       []asynq.Option
		wantReason string // "" for a task the handler must get
	}
	sign := func(s *Signer, opts ...asynq.Option) (*asynq.Task, []asynq.Option) {
		task, o, err := s.Sign(newTask(), append([]asynq.Option{asynq.Queue("mw")}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return task, o
	}
	var cases []enqueueCase
	{
		task, opts := sign(s1)
		cases = append(cases, enqueueCase{"good", task, opts, ""})
	}
	{
		task, opts := sign(s2, asynq.MaxRetry(2), asynq.Timeout(time.Minute))
		cases = append(cases, enqueueCase{"second-key", task, opts, ""})
	}
	cases = append(cases, enqueueCase{"missing", newTask(), []asynq.Option{asynq.Queue("mw")}, "missing asynq-guard-e2e"})
	{
		task, opts := sign(s1)
		tampered := asynq.NewTaskWithHeaders(task.Type(), []byte(secretPayload+"!"), task.Headers())
		cases = append(cases, enqueueCase{"tampered-payload", tampered, opts, "does not match"})
	}
	{
		task, opts := sign(s1)
		h := task.Headers()
		h["trace"] = "t2"
		cases = append(cases, enqueueCase{"tampered-header", asynq.NewTaskWithHeaders(task.Type(), task.Payload(), h), opts, "does not match"})
	}
	{
		task, opts := sign(sWrong)
		cases = append(cases, enqueueCase{"wrong-secret", task, opts, "does not match"})
	}
	{
		task, opts := sign(sUnknown)
		cases = append(cases, enqueueCase{"unknown-key-id", task, opts, "unknown key id"})
	}
	{
		task, opts := sign(s1)
		h := task.Headers()
		h[E2EHeader] = "garbage"
		cases = append(cases, enqueueCase{"malformed", asynq.NewTaskWithHeaders(task.Type(), task.Payload(), h), opts, "malformed"})
	}
	{
		task, opts := sign(s1)
		cases = append(cases, enqueueCase{"other-task-id", task, append(opts, asynq.TaskID("moved-id")), "does not match"})
	}
	{
		task, opts := sign(s1)
		cases = append(cases, enqueueCase{"other-queue", task, append(opts, asynq.Queue("other")), "does not match"})
	}
	{
		task, opts := sign(s1)
		cases = append(cases, enqueueCase{"other-retry", task, append(opts, asynq.MaxRetry(0)), "does not match"})
	}

	ids := map[string]enqueueCase{}
	queues := map[string]string{}
	for _, c := range cases {
		info, err := client.Enqueue(c.task, c.opts...)
		if err != nil {
			t.Fatalf("%s: enqueue: %v", c.name, err)
		}
		ids[info.ID] = c
		queues[info.ID] = info.Queue
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(outcomes)
		mu.Unlock()
		if n >= len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d tasks processed", n, len(ids))
		}
		time.Sleep(20 * time.Millisecond)
	}

	inspector := asynq.NewInspector(redisOpt)
	defer inspector.Close()
	mu.Lock()
	defer mu.Unlock()
	for id, c := range ids {
		o := outcomes[id]
		if c.wantReason == "" {
			if !o.handled || o.err != nil {
				t.Errorf("%s: handled=%v err=%v", c.name, o.handled, o.err)
			}
			continue
		}
		if o.handled {
			t.Errorf("%s: handler was called", c.name)
			continue
		}
		if !errors.Is(o.err, asynq.SkipRetry) || !errors.Is(o.err, ErrRejected) {
			t.Errorf("%s: error %v does not wrap SkipRetry and ErrRejected", c.name, o.err)
		}
		var re *RejectError
		if !errors.As(o.err, &re) || re.TaskID != id {
			t.Errorf("%s: error %#v", c.name, o.err)
		}
		msg := o.err.Error()
		if !strings.Contains(msg, c.wantReason) {
			t.Errorf("%s: error %q does not say %q", c.name, msg, c.wantReason)
		}
		if strings.Contains(msg, "SECRET") {
			t.Errorf("%s: error %q contains the payload", c.name, msg)
		}
		// SkipRetry: asynq archives the task instead of retrying it.
		var state asynq.TaskState
		for i := 0; i < 100; i++ {
			info, err := inspector.GetTaskInfo(queues[id], id)
			if err == nil {
				state = info.State
				if state == asynq.TaskStateArchived {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		if state != asynq.TaskStateArchived {
			t.Errorf("%s: task state %v, want archived", c.name, state)
		}
	}
}
