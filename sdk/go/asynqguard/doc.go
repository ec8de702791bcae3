// Package asynqguard signs asynq task messages for asynq-guard and verifies
// them in workers.
//
// asynq-guard is a proxy between asynq programs and Redis. In its "check"
// mode a producer signs every task it enqueues: the signature covers the
// task message exactly as asynq stores it in Redis (type, payload, id,
// queue, retry limit, timeout, deadline, unique key, retention, group key
// and headers) and travels in the task header "asynq-guard-signature". A
// second header, "asynq-guard-e2e", covers only what a worker handler can
// see, so that a worker can check tasks end to end with VerifyMiddleware.
//
// The byte format is specified in docs/integrity.md of the asynq-guard
// repository; Canonical, E2E and MAC implement it and can be used on their
// own.
//
// A producer signs a task and enqueues the returned task with the returned
// options:
//
//	key, err := asynqguard.KeyFromEnv("k2026a", "ASYNQ_GUARD_KEY")
//	signer, err := asynqguard.NewSigner(key)
//	signed, opts, err := signer.Sign(asynq.NewTask("email:send", payload), asynq.Queue("mail"))
//	info, err := client.Enqueue(signed, opts...)
//
// A worker verifies the end-to-end header before its handlers run:
//
//	mux := asynq.NewServeMux()
//	mux.Use(asynqguard.VerifyMiddleware(key))
package asynqguard
