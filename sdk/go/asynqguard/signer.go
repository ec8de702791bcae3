package asynqguard

import (
	"errors"
	"maps"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
)

// Signer signs tasks for enqueueing with asynq's Client. It is safe for
// concurrent use.
type Signer struct {
	key Key
}

// NewSigner returns a Signer that signs with key. The key is validated and
// its secret trimmed of leading and trailing whitespace.
func NewSigner(key Key) (*Signer, error) {
	k, err := key.normalized()
	if err != nil {
		return nil, err
	}
	return &Signer{key: k}, nil
}

// KeyID returns the id of the signing key.
func (s *Signer) KeyID() string { return s.key.ID }

// Sign prepares task for client.Enqueue(signed, opts...). It resolves the
// options attached to task by asynq.NewTask followed by opts, exactly as
// asynq's Client would (later options override earlier ones), picks a
// random task id unless an asynq.TaskID option is given, and computes the
// message asynq will store. It returns:
//
//   - a new task with the same type and payload and the original headers
//     plus "asynq-guard-signature" (over Canonical) and "asynq-guard-e2e"
//     (over E2E); existing values of those two headers are replaced;
//   - the options to pass to Enqueue: the task's attached options, then
//     opts, then asynq.TaskID with the signed id. The returned task has no
//     options attached, so these must be passed.
//
// The signature is only valid for that single Enqueue call: the id is part
// of it, so the pair cannot be reused (use a new Sign call per task, also
// for periodic tasks). ProcessAt and ProcessIn are passed through
// unchanged; they decide when the task runs, which is not signed.
//
// Only options built by asynq's own constructors are recognised; like
// asynq's Client, Sign ignores any other implementation of asynq.Option.
// Sign fails for what Enqueue would reject (nil task, blank type, blank
// queue, task id or group, Unique TTL under one second).
func (s *Signer) Sign(task *asynq.Task, opts ...asynq.Option) (*asynq.Task, []asynq.Option, error) {
	f, all, err := resolve(task, opts)
	if err != nil {
		return nil, nil, err
	}
	headers := make(map[string]string, len(f.Headers)+2)
	for k, v := range f.Headers {
		if k != SignatureHeader && k != E2EHeader {
			headers[k] = v
		}
	}
	f.Headers = headers
	sig := FormatSignature(s.key.ID, MAC(s.key.Secret, Canonical(f)))
	e2e := FormatSignature(s.key.ID, MAC(s.key.Secret, E2E(f)))
	headers[SignatureHeader] = sig
	headers[E2EHeader] = e2e
	signed := asynq.NewTaskWithHeaders(f.Type, f.Payload, headers)
	return signed, append(all, asynq.TaskID(f.ID)), nil
}

// ResolveFields returns the signed fields of the message asynq's Client
// would store for client.Enqueue(task, opts...), given the same defaults
// (queue "default", retry 25, a 30-minute timeout when neither Timeout nor
// Deadline is given, deadline 0 when none, unique key only with Unique,
// retention and group key only when given). When no asynq.TaskID option is
// given, the id is a new random UUID, which the caller must then pass as
// asynq.TaskID(f.ID). Headers are a copy of task's headers as they are.
func ResolveFields(task *asynq.Task, opts ...asynq.Option) (Fields, error) {
	f, _, err := resolve(task, opts)
	return f, err
}

// resolve computes the fields and the full option list (attached options
// followed by opts).
func resolve(task *asynq.Task, opts []asynq.Option) (Fields, []asynq.Option, error) {
	if task == nil {
		return Fields{}, nil, errors.New("asynqguard: task cannot be nil")
	}
	if blank(task.Type()) {
		return Fields{}, nil, errors.New("asynqguard: task typename cannot be empty")
	}
	attached, err := attachedOptions(task)
	if err != nil {
		return Fields{}, nil, err
	}
	all := append(attached, opts...)
	r, err := resolveOptions(all)
	if err != nil {
		return Fields{}, nil, err
	}
	id := r.taskID
	if id == "" {
		id = uuid.NewString()
	}

	// Timeout and deadline, as the Client derives them: the zero time and
	// the Unix epoch both mean "no deadline", and only when there is
	// neither a deadline nor a timeout does the default timeout apply.
	noDeadline := time.Unix(0, 0)
	deadline := noDeadline
	if !r.deadline.IsZero() {
		deadline = r.deadline
	}
	timeout := r.timeout
	if deadline.Equal(noDeadline) && timeout == 0 {
		timeout = defaultTimeout
	}

	// Keep nil and empty payloads apart: the unique key differs.
	var payload []byte
	if p := task.Payload(); p != nil {
		payload = make([]byte, len(p))
		copy(payload, p)
	}
	f := Fields{
		Type:      task.Type(),
		Payload:   payload,
		ID:        id,
		Queue:     r.queue,
		Retry:     int32(r.retry), // stored as a protobuf int32
		Timeout:   durationSeconds(timeout),
		Deadline:  deadline.Unix(),
		Retention: durationSeconds(r.retention),
		GroupKey:  r.group,
		Headers:   maps.Clone(task.Headers()),
	}
	if r.uniqueTTL > 0 {
		f.UniqueKey = uniqueKey(r.queue, task.Type(), payload)
	}
	return f, all, nil
}
