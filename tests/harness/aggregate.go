package main

// Group aggregation: the server's GroupAggregator packs the payloads of a
// group's tasks into one "aggregated" task. Payloads are binary (they end
// in NUL, CR, LF, 0xff), so the batch uses length prefixes, not a
// separator.

import (
	"encoding/binary"
	"errors"

	"github.com/hibiken/asynq"
)

// aggregator builds the aggregated task. MaxRetry matters only if the
// aggregated handler fails, which it never should.
func aggregator() asynq.GroupAggregator {
	return asynq.GroupAggregatorFunc(func(group string, tasks []*asynq.Task) *asynq.Task {
		payloads := make([][]byte, len(tasks))
		for i, t := range tasks {
			payloads[i] = t.Payload()
		}
		return asynq.NewTask(typeAggregated, encodeBatch(payloads), asynq.MaxRetry(defaultMaxRetry))
	})
}

// encodeBatch writes each payload as a 4-byte big-endian length and the
// bytes.
func encodeBatch(payloads [][]byte) []byte {
	var out []byte
	for _, p := range payloads {
		out = binary.BigEndian.AppendUint32(out, uint32(len(p)))
		out = append(out, p...)
	}
	return out
}

// decodeBatch reverses encodeBatch and rejects truncated input.
func decodeBatch(data []byte) ([][]byte, error) {
	var payloads [][]byte
	for len(data) > 0 {
		if len(data) < 4 {
			return nil, errors.New("truncated length prefix")
		}
		n := int(binary.BigEndian.Uint32(data))
		data = data[4:]
		if n > len(data) {
			return nil, errors.New("truncated payload")
		}
		payloads = append(payloads, data[:n])
		data = data[n:]
	}
	return payloads, nil
}
