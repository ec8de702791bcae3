package asynqguard

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
)

// ErrRejected is wrapped by every error VerifyMiddleware returns for a task
// it refused, so callers can tell rejections from handler errors with
// errors.Is(err, ErrRejected).
var ErrRejected = errors.New("asynq-guard: task rejected")

// RejectError is the error VerifyMiddleware returns for a task whose
// "asynq-guard-e2e" header is missing or does not verify. It wraps both
// ErrRejected and asynq.SkipRetry, so asynq archives the task instead of
// retrying it. It never contains the payload.
type RejectError struct {
	// TaskType, TaskID and Queue identify the rejected task.
	TaskType, TaskID, Queue string
	// Reason says why the task was rejected.
	Reason string
}

// Error describes the rejection.
func (e *RejectError) Error() string {
	return fmt.Sprintf("asynq-guard: rejected task %q (type %q, queue %q): %s", e.TaskID, e.TaskType, e.Queue, e.Reason)
}

// Unwrap returns ErrRejected and asynq.SkipRetry.
func (e *RejectError) Unwrap() []error { return []error{ErrRejected, asynq.SkipRetry} }

// Verifier checks the "asynq-guard-e2e" header of tasks handed to a worker.
// It is safe for concurrent use.
type Verifier struct {
	keys []Key
}

// NewVerifier returns a Verifier accepting signatures by any of keys. Every
// key must be valid, and ids must be distinct.
func NewVerifier(keys ...Key) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errNoKeys
	}
	seen := make(map[string]bool, len(keys))
	v := &Verifier{}
	for _, key := range keys {
		k, err := key.normalized()
		if err != nil {
			return nil, err
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("asynqguard: key id %q is listed twice", k.ID)
		}
		seen[k.ID] = true
		v.keys = append(v.keys, k)
	}
	return v, nil
}

// Verify checks task against the id, queue name and retry limit asynq put
// into ctx for the handler. It returns nil for a valid "asynq-guard-e2e"
// header and a *RejectError otherwise.
func (v *Verifier) Verify(ctx context.Context, task *asynq.Task) error {
	id, okID := asynq.GetTaskID(ctx)
	queue, okQueue := asynq.GetQueueName(ctx)
	retry, okRetry := asynq.GetMaxRetry(ctx)
	reject := func(reason string) error {
		return &RejectError{TaskType: task.Type(), TaskID: id, Queue: queue, Reason: reason}
	}
	if !okID || !okQueue || !okRetry {
		return reject("no asynq task metadata in the handler context")
	}
	headers := task.Headers()
	sig, ok := headers[E2EHeader]
	if !ok {
		return reject("missing " + E2EHeader + " header")
	}
	f := Fields{
		Type:    task.Type(),
		Payload: task.Payload(),
		ID:      id,
		Queue:   queue,
		Retry:   int32(retry),
		Headers: headers,
	}
	if err := VerifyForm(E2E(f), sig, v.keys...); err != nil {
		return reject(E2EHeader + ": " + err.Error())
	}
	return nil
}

// Middleware returns an asynq middleware that calls the next handler only
// for tasks that pass Verify, and returns the *RejectError otherwise.
func (v *Verifier) Middleware() asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
			if err := v.Verify(ctx, task); err != nil {
				return err
			}
			return next.ProcessTask(ctx, task)
		})
	}
}

// VerifyMiddleware returns an asynq middleware that checks the
// "asynq-guard-e2e" header of every task against its type, payload and
// headers and the task id, queue name and retry limit from the handler
// context (asynq.GetTaskID, GetQueueName, GetMaxRetry), accepting a
// signature by any of keys. A task with a missing or wrong signature never
// reaches the handler: the middleware returns a *RejectError, which wraps
// ErrRejected and asynq.SkipRetry and says why, without the payload.
//
// It panics if no key is given, a key is invalid, or two keys share an id;
// use NewVerifier to get an error instead.
func VerifyMiddleware(keys ...Key) asynq.MiddlewareFunc {
	v, err := NewVerifier(keys...)
	if err != nil {
		panic(err)
	}
	return v.Middleware()
}
