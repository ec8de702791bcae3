package asynqguard

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Header names written by Signer and read by VerifyMiddleware.
const (
	// SignatureHeader carries the signature over the canonical form of the
	// whole task message (see Canonical). The proxy checks it in check mode.
	SignatureHeader = "asynq-guard-signature"
	// E2EHeader carries the signature over the end-to-end form (see E2E),
	// which a worker can recompute from what its handler sees.
	E2EHeader = "asynq-guard-e2e"
)

// Domain separation prefixes of the two forms (each followed by a 0x00 byte).
const (
	canonicalPrefix = "asynq-guard-v1"
	e2ePrefix       = "asynq-guard-e2e-v1"
)

// signatureVersion is the first part of the signature text.
const signatureVersion = "v1"

// Fields are the task message fields that enter the signed forms, with the
// types and values asynq stores in Redis (protobuf asynq.TaskMessage).
type Fields struct {
	// Type is field 1, the task type name.
	Type string
	// Payload is field 2.
	Payload []byte
	// ID is field 3, the task id.
	ID string
	// Queue is field 4, the queue name.
	Queue string
	// Retry is field 5, the maximum number of retries.
	Retry int32
	// Timeout is field 8, in seconds (0: none).
	Timeout int64
	// Deadline is field 9, in Unix seconds (0: none).
	Deadline int64
	// UniqueKey is field 10, the Redis key of the uniqueness lock ("" if none).
	UniqueKey string
	// Retention is field 12, in seconds.
	Retention int64
	// GroupKey is field 14, the aggregation group ("" if none).
	GroupKey string
	// Headers is field 15. SignatureHeader and E2EHeader are ignored by
	// Canonical and E2E.
	Headers map[string]string
}

// formWriter appends the encodings of docs/integrity.md to a buffer.
type formWriter struct{ buf []byte }

// bytes writes the length as an unsigned 64-bit big-endian integer, then
// the bytes.
func (w *formWriter) bytes(b []byte) {
	w.buf = binary.BigEndian.AppendUint64(w.buf, uint64(len(b)))
	w.buf = append(w.buf, b...)
}

// str writes s "as bytes".
func (w *formWriter) str(s string) {
	w.buf = binary.BigEndian.AppendUint64(w.buf, uint64(len(s)))
	w.buf = append(w.buf, s...)
}

// int writes v as a signed 64-bit big-endian (two's complement) integer.
func (w *formWriter) int(v int64) {
	w.buf = binary.BigEndian.AppendUint64(w.buf, uint64(v))
}

// headers writes the count of the signed header pairs, then each pair in
// bytewise key order; the two signature headers are left out.
func (w *formWriter) headers(h map[string]string) {
	keys := signedHeaderKeys(h)
	w.buf = binary.BigEndian.AppendUint64(w.buf, uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.str(h[k])
	}
}

// signedHeaderKeys returns the keys of h without the two signature headers,
// sorted bytewise.
func signedHeaderKeys(h map[string]string) []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		if k == SignatureHeader || k == E2EHeader {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys) // Go compares strings bytewise
	return keys
}

// Canonical returns the canonical form of a task message: the bytes the
// "asynq-guard-signature" MAC covers (docs/integrity.md, "What is signed").
func Canonical(f Fields) []byte {
	w := formWriter{buf: make([]byte, 0, 256+len(f.Payload))}
	w.buf = append(w.buf, canonicalPrefix...)
	w.buf = append(w.buf, 0)
	w.str(f.Type)
	w.bytes(f.Payload)
	w.str(f.ID)
	w.str(f.Queue)
	w.int(int64(f.Retry))
	w.int(f.Timeout)
	w.int(f.Deadline)
	w.str(f.UniqueKey)
	w.int(f.Retention)
	w.str(f.GroupKey)
	w.headers(f.Headers)
	return w.buf
}

// E2E returns the end-to-end form of a task message: the bytes the
// "asynq-guard-e2e" MAC covers (type, payload, id, queue, retry, headers).
// The other fields of f are ignored.
func E2E(f Fields) []byte {
	w := formWriter{buf: make([]byte, 0, 128+len(f.Payload))}
	w.buf = append(w.buf, e2ePrefix...)
	w.buf = append(w.buf, 0)
	w.str(f.Type)
	w.bytes(f.Payload)
	w.str(f.ID)
	w.str(f.Queue)
	w.int(int64(f.Retry))
	w.headers(f.Headers)
	return w.buf
}

// MAC returns HMAC-SHA256 of form under secret (32 bytes). The secret is
// used as given; Key secrets are trimmed by NewKey, KeyFromFile and
// KeyFromEnv.
func MAC(secret, form []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(form)
	return m.Sum(nil)
}

// FormatSignature writes a signature as text: "v1:<key id>:<lower-case hex>".
func FormatSignature(keyID string, mac []byte) string {
	return signatureVersion + ":" + keyID + ":" + hex.EncodeToString(mac)
}

// SignForm returns the signature text of form under key:
// FormatSignature(key.ID, MAC(trimmed secret, form)). It fails if the key
// is invalid.
func SignForm(key Key, form []byte) (string, error) {
	k, err := key.normalized()
	if err != nil {
		return "", err
	}
	return FormatSignature(k.ID, MAC(k.Secret, form)), nil
}

// ErrMalformedSignature is returned by ParseSignature for text that is not
// "v1:<key id>:<64 lower-case hex digits>".
var ErrMalformedSignature = errors.New("malformed signature")

// ParseSignature splits signature text into the key id and the 32-byte
// MAC. Only version "v1", a valid key id and exactly 64 lower-case hex
// digits are accepted.
func ParseSignature(s string) (keyID string, mac []byte, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] != signatureVersion {
		return "", nil, ErrMalformedSignature
	}
	if ValidateKeyID(parts[1]) != nil {
		return "", nil, ErrMalformedSignature
	}
	h := parts[2]
	if len(h) != 2*sha256.Size {
		return "", nil, ErrMalformedSignature
	}
	for i := 0; i < len(h); i++ {
		if !(h[i] >= '0' && h[i] <= '9' || h[i] >= 'a' && h[i] <= 'f') {
			return "", nil, ErrMalformedSignature
		}
	}
	mac, err = hex.DecodeString(h)
	if err != nil {
		return "", nil, ErrMalformedSignature
	}
	return parts[1], mac, nil
}

// VerifyForm checks signature text sig against form under the key whose id
// the signature names, which must be one of keys. It returns nil on a
// match; otherwise an error saying why (malformed, unknown key id, or
// mismatch), never containing secrets.
func VerifyForm(form []byte, sig string, keys ...Key) error {
	id, mac, err := ParseSignature(sig)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.ID != id {
			continue
		}
		nk, err := k.normalized()
		if err != nil {
			return err
		}
		if hmac.Equal(MAC(nk.Secret, form), mac) {
			return nil
		}
		return fmt.Errorf("signature does not match (key %q)", id)
	}
	return fmt.Errorf("unknown key id %q", id)
}
