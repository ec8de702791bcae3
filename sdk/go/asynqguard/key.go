package asynqguard

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// MinSecretLen is the smallest accepted key secret, in bytes, after leading
// and trailing whitespace has been trimmed.
const MinSecretLen = 32

// MaxKeyIDLen is the longest accepted key id, in characters.
const MaxKeyIDLen = 32

// Key is a signing key: a secret byte string and the id that names it in
// signatures ("v1:<id>:<hex>").
//
// The rules are the proxy's: the id is 1 to 32 characters of A-Z, a-z, 0-9,
// '_' and '-', and the secret, after trimming leading and trailing
// whitespace, is at least 32 bytes long. Signer and VerifyMiddleware trim
// the secret before use, exactly as the proxy trims the text it reads from
// a key file or environment variable.
type Key struct {
	// ID names the key in the signature text. It is not secret.
	ID string
	// Secret is the HMAC-SHA256 key.
	Secret []byte
}

// ValidateKeyID reports whether id is a valid key id (1 to 32 characters of
// A-Z a-z 0-9 _ -).
func ValidateKeyID(id string) error {
	if len(id) == 0 || len(id) > MaxKeyIDLen {
		return fmt.Errorf("asynqguard: key id %q must be 1 to %d characters long", id, MaxKeyIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("asynqguard: key id %q may only contain A-Z a-z 0-9 _ -", id)
		}
	}
	return nil
}

// Validate checks the key id and the length of the trimmed secret. The
// error never contains the secret.
func (k Key) Validate() error {
	if err := ValidateKeyID(k.ID); err != nil {
		return err
	}
	if n := len(bytes.TrimSpace(k.Secret)); n < MinSecretLen {
		return fmt.Errorf("asynqguard: key %q: secret is %d bytes after trimming whitespace, need at least %d", k.ID, n, MinSecretLen)
	}
	return nil
}

// normalized returns a copy of k with the secret trimmed of leading and
// trailing whitespace, after validating it.
func (k Key) normalized() (Key, error) {
	if err := k.Validate(); err != nil {
		return Key{}, err
	}
	secret := bytes.TrimSpace(k.Secret)
	return Key{ID: k.ID, Secret: append([]byte(nil), secret...)}, nil
}

// NewKey returns a validated Key with the secret trimmed of leading and
// trailing whitespace.
func NewKey(id string, secret []byte) (Key, error) {
	return Key{ID: id, Secret: secret}.normalized()
}

// KeyFromFile reads a key secret from the file at path, trims leading and
// trailing whitespace (so a trailing newline is harmless) and returns the
// validated Key named id.
func KeyFromFile(id, path string) (Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("asynqguard: key %q: %w", id, err)
	}
	return NewKey(id, data)
}

// KeyFromEnv reads a key secret from the environment variable name, trims
// leading and trailing whitespace and returns the validated Key named id.
// An unset variable is an error.
func KeyFromEnv(id, name string) (Key, error) {
	value, ok := os.LookupEnv(name)
	if !ok {
		return Key{}, fmt.Errorf("asynqguard: key %q: environment variable %s is not set", id, name)
	}
	return NewKey(id, []byte(value))
}

// errNoKeys is returned when a verifier is built without keys.
var errNoKeys = errors.New("asynqguard: at least one key is needed")
