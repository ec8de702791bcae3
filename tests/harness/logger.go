package main

// asynq logs through its own Logger interface. With -quiet the harness
// hands it one that drops everything except Fatal, which asynq uses only
// when it cannot go on.

import (
	"fmt"
	"os"

	"github.com/hibiken/asynq"
)

type discardLogger struct{}

func (discardLogger) Debug(args ...interface{}) {}
func (discardLogger) Info(args ...interface{})  {}
func (discardLogger) Warn(args ...interface{})  {}
func (discardLogger) Error(args ...interface{}) {}

func (discardLogger) Fatal(args ...interface{}) {
	fmt.Fprintln(os.Stderr, append([]interface{}{"asynq: fatal:"}, args...)...)
	os.Exit(1)
}

// asynqLogger picks the logger and level for server and scheduler. Without
// -quiet, warnings stay visible: the planned failures show up there.
func asynqLogger(quiet bool) (asynq.Logger, asynq.LogLevel) {
	if quiet {
		return discardLogger{}, asynq.FatalLevel
	}
	return nil, asynq.WarnLevel
}
