package asynqguard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

func fmtFields(f Fields) string { return fmt.Sprintf("%+v", f) }

func TestKeyValidation(t *testing.T) {
	secret := []byte(strings.Repeat("s", 32))
	good := []string{"a", "k2026a", "A-Z_0-9", strings.Repeat("x", 32)}
	for _, id := range good {
		if _, err := NewKey(id, secret); err != nil {
			t.Errorf("id %q rejected: %v", id, err)
		}
	}
	bad := []string{"", strings.Repeat("x", 33), "with space", "dot.ted", "colon:", "ü"}
	for _, id := range bad {
		if _, err := NewKey(id, secret); err == nil {
			t.Errorf("id %q accepted", id)
		}
	}
	if _, err := NewKey("k", []byte("  "+strings.Repeat("s", 31)+"\n\t")); err == nil {
		t.Error("31-byte secret (after trimming) accepted")
	} else if strings.Contains(err.Error(), "sss") {
		t.Error("error contains the secret")
	}
	k, err := NewKey("k", []byte(" \t"+strings.Repeat("s", 32)+"\r\n"))
	if err != nil || string(k.Secret) != strings.Repeat("s", 32) {
		t.Errorf("trimmed key: %q, %v", k.Secret, err)
	}
}

func TestKeyFromFileAndEnv(t *testing.T) {
	secret := strings.Repeat("f", 40)
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := KeyFromFile("file", path)
	if err != nil || string(k.Secret) != secret || k.ID != "file" {
		t.Fatalf("KeyFromFile: %+v %v", k, err)
	}
	if _, err := KeyFromFile("file", path+".missing"); err == nil {
		t.Error("missing file accepted")
	}
	t.Setenv("ASYNQGUARD_TEST_KEY", "  "+secret+"  ")
	k, err = KeyFromEnv("env", "ASYNQGUARD_TEST_KEY")
	if err != nil || string(k.Secret) != secret {
		t.Fatalf("KeyFromEnv: %+v %v", k, err)
	}
	if _, err := KeyFromEnv("env", "ASYNQGUARD_TEST_KEY_UNSET"); err == nil {
		t.Error("unset variable accepted")
	}
}

func TestParseSignature(t *testing.T) {
	h := strings.Repeat("0a", 32)
	if id, mac, err := ParseSignature("v1:k-1:" + h); err != nil || id != "k-1" || len(mac) != 32 {
		t.Fatalf("valid signature: %q %d %v", id, len(mac), err)
	}
	for _, s := range []string{"", "v1:k", "v2:k:" + h, "v1::" + h, "v1:k:" + h[:62], "v1:k:" + strings.ToUpper(h),
		"v1:k:" + h + "00", "v1:k:x:" + h, "v1:bad id:" + h} {
		if _, _, err := ParseSignature(s); !errors.Is(err, ErrMalformedSignature) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestResolveDefaultsAndOverrides(t *testing.T) {
	task := asynq.NewTask("t", []byte("p"), asynq.MaxRetry(2), asynq.Queue("q1"), asynq.Deadline(time.Unix(2000000000, 0)))
	f, err := ResolveFields(task, asynq.Queue("q2"), asynq.TaskID("id-1"), asynq.MaxRetry(9))
	if err != nil {
		t.Fatal(err)
	}
	if f.Queue != "q2" || f.Retry != 9 || f.ID != "id-1" || f.Timeout != 0 || f.Deadline != 2000000000 {
		t.Errorf("%+v", f)
	}
	f, err = ResolveFields(asynq.NewTask("t", nil))
	if err != nil {
		t.Fatal(err)
	}
	if f.Queue != "default" || f.Retry != 25 || f.Timeout != 1800 || f.Deadline != 0 || len(f.ID) != 36 || f.Payload != nil {
		t.Errorf("defaults: %+v", f)
	}
	g, _ := ResolveFields(asynq.NewTask("t", nil))
	if g.ID == f.ID {
		t.Error("task ids repeat")
	}
}

// customOption implements asynq.Option but is not one of asynq's own;
// asynq's Client ignores it, and so must Sign.
type customOption struct{}

func (customOption) String() string         { return "custom" }
func (customOption) Type() asynq.OptionType { return asynq.QueueOpt }
func (customOption) Value() interface{}     { return "hijacked" }

func TestSignIgnoresForeignOptions(t *testing.T) {
	f, err := ResolveFields(asynq.NewTask("t", nil), customOption{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Queue != "default" {
		t.Errorf("queue %q", f.Queue)
	}
}

func TestSignErrors(t *testing.T) {
	s, err := NewSigner(Key{ID: "k", Secret: []byte(strings.Repeat("s", 32))})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		task *asynq.Task
		opts []asynq.Option
	}{
		"nil task":     {nil, nil},
		"blank type":   {asynq.NewTask(" ", nil), nil},
		"blank queue":  {asynq.NewTask("t", nil), []asynq.Option{asynq.Queue(" ")}},
		"blank id":     {asynq.NewTask("t", nil), []asynq.Option{asynq.TaskID("")}},
		"blank group":  {asynq.NewTask("t", nil), []asynq.Option{asynq.Group("")}},
		"short unique": {asynq.NewTask("t", nil), []asynq.Option{asynq.Unique(time.Millisecond)}},
	}
	for name, tc := range cases {
		if _, _, err := s.Sign(tc.task, tc.opts...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := NewSigner(Key{ID: "k", Secret: []byte("short")}); err == nil {
		t.Error("short key accepted")
	}
}

func TestSignOutput(t *testing.T) {
	key := testKey(t, "k1")
	s, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	orig := asynq.NewTaskWithHeaders("t", []byte("p"), map[string]string{"a": "b", SignatureHeader: "old"}, asynq.MaxRetry(4))
	signed, opts, err := s.Sign(orig, asynq.Queue("q"))
	if err != nil {
		t.Fatal(err)
	}
	if signed.Type() != "t" || string(signed.Payload()) != "p" || signed.Headers()["a"] != "b" {
		t.Errorf("signed task %q %q %v", signed.Type(), signed.Payload(), signed.Headers())
	}
	if orig.Headers()[SignatureHeader] != "old" || orig.Headers()[E2EHeader] != "" {
		t.Error("original task modified")
	}
	if len(opts) != 3 || opts[0].Type() != asynq.MaxRetryOpt || opts[1].Type() != asynq.QueueOpt || opts[2].Type() != asynq.TaskIDOpt {
		t.Errorf("options %v", opts)
	}
	f, err := ResolveFields(signed, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if f.Retry != 4 || f.Queue != "q" {
		t.Errorf("fields %+v", f)
	}
	if err := VerifyForm(Canonical(f), signed.Headers()[SignatureHeader], key); err != nil {
		t.Error(err)
	}
	if err := VerifyForm(E2E(f), signed.Headers()[E2EHeader], key); err != nil {
		t.Error(err)
	}
	if !strings.HasPrefix(signed.Headers()[SignatureHeader], "v1:k1:") {
		t.Error(signed.Headers()[SignatureHeader])
	}
}
