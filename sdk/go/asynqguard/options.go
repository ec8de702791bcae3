package asynqguard

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unsafe"

	"github.com/hibiken/asynq"
)

// Values asynq's Client uses when an option is not given.
const (
	defaultQueue    = "default"
	defaultMaxRetry = 25
	defaultTimeout  = 30 * time.Minute
)

// asynqOptionTypes maps the concrete types of the options built by asynq's
// own constructors to their kind. asynq's Client recognises options by
// their concrete type and silently ignores any other implementation of
// asynq.Option, so the resolver does the same.
var asynqOptionTypes = map[reflect.Type]asynq.OptionType{
	reflect.TypeOf(asynq.MaxRetry(0)):            asynq.MaxRetryOpt,
	reflect.TypeOf(asynq.Queue("")):              asynq.QueueOpt,
	reflect.TypeOf(asynq.Timeout(0)):             asynq.TimeoutOpt,
	reflect.TypeOf(asynq.Deadline(time.Time{})):  asynq.DeadlineOpt,
	reflect.TypeOf(asynq.Unique(0)):              asynq.UniqueOpt,
	reflect.TypeOf(asynq.ProcessAt(time.Time{})): asynq.ProcessAtOpt,
	reflect.TypeOf(asynq.ProcessIn(0)):           asynq.ProcessInOpt,
	reflect.TypeOf(asynq.TaskID("")):             asynq.TaskIDOpt,
	reflect.TypeOf(asynq.Retention(0)):           asynq.RetentionOpt,
	reflect.TypeOf(asynq.Group("")):              asynq.GroupOpt,
}

// resolved holds the outcome of applying a list of options the way asynq's
// Client does; only what enters the stored message is kept.
type resolved struct {
	retry     int
	queue     string
	taskID    string // "" when no TaskID option was given
	timeout   time.Duration
	deadline  time.Time
	uniqueTTL time.Duration
	retention time.Duration
	group     string
}

// blank reports whether s is empty or only whitespace (asynq's rule for
// queue names, task ids and group keys).
func blank(s string) bool { return strings.TrimSpace(s) == "" }

// resolveOptions applies opts in order, later ones overriding earlier ones,
// starting from asynq's defaults, and validates them as asynq does.
func resolveOptions(opts []asynq.Option) (resolved, error) {
	r := resolved{retry: defaultMaxRetry, queue: defaultQueue}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		kind, known := asynqOptionTypes[reflect.TypeOf(opt)]
		if !known {
			continue // asynq ignores options it did not create
		}
		v := opt.Value()
		switch kind {
		case asynq.MaxRetryOpt:
			r.retry = v.(int)
		case asynq.QueueOpt:
			q := v.(string)
			if blank(q) {
				return resolved{}, errors.New("asynqguard: queue name must contain one or more characters")
			}
			r.queue = q
		case asynq.TaskIDOpt:
			id := v.(string)
			if blank(id) {
				return resolved{}, errors.New("asynqguard: task ID cannot be empty")
			}
			r.taskID = id
		case asynq.TimeoutOpt:
			r.timeout = v.(time.Duration)
		case asynq.DeadlineOpt:
			r.deadline = v.(time.Time)
		case asynq.UniqueOpt:
			ttl := v.(time.Duration)
			if ttl < time.Second {
				return resolved{}, errors.New("asynqguard: Unique TTL cannot be less than 1s")
			}
			r.uniqueTTL = ttl
		case asynq.RetentionOpt:
			r.retention = v.(time.Duration)
		case asynq.GroupOpt:
			g := v.(string)
			if blank(g) {
				return resolved{}, errors.New("asynqguard: group key cannot be empty")
			}
			r.group = g
		case asynq.ProcessAtOpt, asynq.ProcessInOpt:
			// When the task becomes ready is not part of the message.
		}
	}
	return r, nil
}

// uniqueKey is the Redis key of a task's uniqueness lock, as asynq names
// it: "asynq:{<queue>}:unique:<type>:<md5 of payload, hex>", with nothing
// after the last colon for a nil payload.
func uniqueKey(queue, typename string, payload []byte) string {
	prefix := "asynq:{" + queue + "}:unique:" + typename + ":"
	if payload == nil {
		return prefix
	}
	sum := md5.Sum(payload)
	return prefix + hex.EncodeToString(sum[:])
}

// attachedOptions returns the options given to asynq.NewTask or
// asynq.NewTaskWithHeaders for t. asynq keeps them in an unexported field
// and offers no accessor, so they are read through reflection; if a future
// asynq version changes the field, an error is returned rather than a
// wrong signature.
func attachedOptions(t *asynq.Task) ([]asynq.Option, error) {
	v := reflect.ValueOf(t).Elem()
	f := v.FieldByName("opts")
	if !f.IsValid() || f.Type() != reflect.TypeOf([]asynq.Option(nil)) {
		return nil, fmt.Errorf("asynqguard: cannot read the options attached to an asynq.Task in this asynq version")
	}
	opts := *(*[]asynq.Option)(unsafe.Pointer(f.UnsafeAddr()))
	return append([]asynq.Option(nil), opts...), nil
}

// durationSeconds converts d to whole seconds the way asynq does when it
// builds the message (float seconds truncated toward zero).
func durationSeconds(d time.Duration) int64 { return int64(d.Seconds()) }
