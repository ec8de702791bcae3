package asynqguard

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

func testKey(t *testing.T, id string) Key {
	t.Helper()
	k, err := NewKey(id, []byte("  secret-for-"+id+"-0123456789abcdefghijklmnop\n"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSignMatchesStoredMessage enqueues signed tasks with a real asynq
// Client into a real Redis, reads back the message asynq stored, and checks
// that the signatures in its headers verify over the stored fields.
func TestSignMatchesStoredMessage(t *testing.T) {
	addr := testRedis(t)
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: addr})
	defer client.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()

	key := testKey(t, "k1")
	signer, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Hour)
	cases := []struct {
		name string
		task *asynq.Task
		opts []asynq.Option
		want func(f Fields) string // "" when the stored fields look right
	}{
		{name: "plain", task: asynq.NewTask("t:plain", []byte("hello")),
			want: expect(func(f Fields) bool {
				return f.Queue == "default" && f.Retry == 25 && f.Timeout == 1800 && f.Deadline == 0
			})},
		{name: "max-retry-timeout", task: asynq.NewTask("t:retry", []byte("p")),
			opts: []asynq.Option{asynq.MaxRetry(3), asynq.Timeout(90 * time.Second)},
			want: expect(func(f Fields) bool { return f.Retry == 3 && f.Timeout == 90 && f.Deadline == 0 })},
		{name: "deadline-only", task: asynq.NewTask("t:deadline", []byte("p")),
			opts: []asynq.Option{asynq.Deadline(deadline)},
			want: expect(func(f Fields) bool { return f.Timeout == 0 && f.Deadline == deadline.Unix() })},
		{name: "unique", task: asynq.NewTask("t:unique", []byte("u")),
			opts: []asynq.Option{asynq.Unique(time.Hour), asynq.Queue("uq")},
			want: expect(func(f Fields) bool {
				return f.UniqueKey == "asynq:{uq}:unique:t:unique:7b774effe4a349c6dd82ad4f4f21d34c"
			})},
		{name: "unique-nil-payload", task: asynq.NewTask("t:unique-nil", nil),
			opts: []asynq.Option{asynq.Unique(time.Minute)},
			want: expect(func(f Fields) bool { return f.UniqueKey == "asynq:{default}:unique:t:unique-nil:" })},
		{name: "unique-empty-payload", task: asynq.NewTask("t:unique-empty", []byte{}),
			opts: []asynq.Option{asynq.Unique(time.Minute)},
			want: expect(func(f Fields) bool {
				return f.UniqueKey == "asynq:{default}:unique:t:unique-empty:d41d8cd98f00b204e9800998ecf8427e"
			})},
		{name: "group", task: asynq.NewTask("t:group", []byte("g")),
			opts: []asynq.Option{asynq.Group("batch-1")},
			want: expect(func(f Fields) bool { return f.GroupKey == "batch-1" })},
		{name: "retention", task: asynq.NewTask("t:retention", []byte("r")),
			opts: []asynq.Option{asynq.Retention(48 * time.Hour)},
			want: expect(func(f Fields) bool { return f.Retention == 172800 })},
		{name: "process-in", task: asynq.NewTask("t:in", []byte("later")),
			opts: []asynq.Option{asynq.ProcessIn(time.Hour)}},
		{name: "process-at-unique", task: asynq.NewTask("t:at", []byte("later")),
			opts: []asynq.Option{asynq.ProcessAt(time.Now().Add(time.Hour)), asynq.Unique(time.Hour)}},
		{name: "task-options-overridden",
			task: asynq.NewTask("t:attached", []byte("a"), asynq.MaxRetry(1), asynq.Queue("first"), asynq.Timeout(time.Minute)),
			opts: []asynq.Option{asynq.Queue("second")},
			want: expect(func(f Fields) bool { return f.Queue == "second" && f.Retry == 1 && f.Timeout == 60 })},
		{name: "task-id", task: asynq.NewTask("t:id", []byte("i")),
			opts: []asynq.Option{asynq.TaskID("my-own-id")},
			want: expect(func(f Fields) bool { return f.ID == "my-own-id" })},
		{name: "headers",
			task: asynq.NewTaskWithHeaders("t:headers", []byte("h"), map[string]string{"trace": "abc", "tenant": "ü", E2EHeader: "stale"}),
			want: expect(func(f Fields) bool { return f.Headers["trace"] == "abc" && f.Headers["tenant"] == "ü" })},
		{name: "odd-durations", task: asynq.NewTask("t:odd", []byte("o")),
			opts: []asynq.Option{asynq.Timeout(1500 * time.Millisecond), asynq.Retention(-3 * time.Second), asynq.MaxRetry(-4)},
			want: expect(func(f Fields) bool { return f.Timeout == 1 && f.Retention == -3 && f.Retry == 0 })},
		{name: "negative-timeout", task: asynq.NewTask("t:negative", []byte("n")),
			opts: []asynq.Option{asynq.Timeout(-2 * time.Second)},
			want: expect(func(f Fields) bool { return f.Timeout == -2 })},
		{name: "epoch-deadline", task: asynq.NewTask("t:epoch", []byte("e")),
			opts: []asynq.Option{asynq.Deadline(time.Unix(0, 0))},
			want: expect(func(f Fields) bool { return f.Deadline == 0 && f.Timeout == 1800 })},
		{name: "all", task: asynq.NewTaskWithHeaders("t:all", []byte("everything"), map[string]string{"h": "v"}, asynq.Retention(time.Hour)),
			opts: []asynq.Option{asynq.Queue("allq"), asynq.MaxRetry(7), asynq.Timeout(time.Minute), asynq.Deadline(deadline),
				asynq.Unique(time.Hour), asynq.Group("grp"), asynq.ProcessIn(time.Minute)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signed, opts, err := signer.Sign(tc.task, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			info, err := client.Enqueue(signed, opts...)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := rdb.HGet(context.Background(), "asynq:{"+info.Queue+"}:t:"+info.ID, "msg").Bytes()
			if err != nil {
				t.Fatal(err)
			}
			stored, err := decodeTaskMessage(raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(stored.unknown) != 0 {
				t.Errorf("unexpected fields %v", stored.unknown)
			}
			sig, e2e := stored.Headers[SignatureHeader], stored.Headers[E2EHeader]
			if err := VerifyForm(Canonical(stored.Fields), sig, key); err != nil {
				t.Errorf("signature header %q does not verify over the stored message: %v", sig, err)
			}
			if err := VerifyForm(E2E(stored.Fields), e2e, key); err != nil {
				t.Errorf("e2e header %q does not verify over the stored message: %v", e2e, err)
			}
			// What Sign resolved is what asynq stored, field by field.
			resolved, err := ResolveFields(tc.task, append(tc.opts, asynq.TaskID(info.ID))...)
			if err != nil {
				t.Fatal(err)
			}
			resolved.Headers = signed.Headers()
			if !bytes.Equal(Canonical(resolved), Canonical(stored.Fields)) {
				t.Errorf("resolved %+v\nstored   %+v", resolved, stored.Fields)
			}
			if tc.want != nil {
				if msg := tc.want(stored.Fields); msg != "" {
					t.Error(msg)
				}
			}
		})
	}
}

// expect turns a predicate on the stored fields into a checker.
func expect(ok func(f Fields) bool) func(f Fields) string {
	return func(f Fields) string {
		if ok(f) {
			return ""
		}
		return "stored fields not as expected: " + fieldsString(f)
	}
}

func fieldsString(f Fields) string {
	g := f
	g.Payload = nil
	return fmtFields(g)
}
