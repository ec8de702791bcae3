package asynqguard

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// The tests share one redis-server, started on first use on a free port
// and stopped by TestMain.
var (
	redisOnce sync.Once
	redisAddr string
	redisErr  error
	redisSkip string
	redisCmd  *exec.Cmd
	redisDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if redisCmd != nil && redisCmd.Process != nil {
		redisCmd.Process.Kill()
		redisCmd.Wait()
	}
	if redisDir != "" {
		os.RemoveAll(redisDir)
	}
	os.Exit(code)
}

// findRedisServer returns the path of redis-server, or "".
func findRedisServer() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server"
	}
	return ""
}

// testRedis returns the address of the shared redis-server, skipping the
// test if redis-server is not installed.
func testRedis(t *testing.T) string {
	t.Helper()
	redisOnce.Do(startRedis)
	if redisSkip != "" {
		t.Skip(redisSkip)
	}
	if redisErr != nil {
		t.Fatal(redisErr)
	}
	return redisAddr
}

func startRedis() {
	bin := findRedisServer()
	if bin == "" {
		redisSkip = "redis-server is not installed"
		return
	}
	dir, err := os.MkdirTemp("", "asynqguard-redis-")
	if err != nil {
		redisErr = err
		return
	}
	redisDir = dir
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			redisErr = err
			return
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		var logBuf bytes.Buffer
		cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--logfile", filepath.Join(dir, "redis.log"))
		cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
		if err := cmd.Start(); err != nil {
			redisErr = err
			return
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		rc := redis.NewClient(&redis.Options{Addr: addr})
		ok := false
		for i := 0; i < 100; i++ {
			if rc.Ping(context.Background()).Err() == nil {
				ok = true
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		rc.Close()
		if ok {
			redisCmd, redisAddr = cmd, addr
			return
		}
		cmd.Process.Kill()
		cmd.Wait()
		redisErr = fmt.Errorf("redis-server on port %d did not answer: %s", port, logBuf.String())
	}
}

// storedMessage is a task message decoded from Redis, with the fields the
// signature covers plus an indication of unknown fields.
type storedMessage struct {
	Fields
	unknown []protowire.Number
}

// decodeTaskMessage decodes the protobuf asynq.TaskMessage fields that
// enter the signed forms.
func decodeTaskMessage(b []byte) (storedMessage, error) {
	var m storedMessage
	m.Headers = map[string]string{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return m, protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 1:
				m.Type = string(v)
			case 2:
				m.Payload = append([]byte{}, v...)
			case 3:
				m.ID = string(v)
			case 4:
				m.Queue = string(v)
			case 7: // error_msg, not signed
			case 10:
				m.UniqueKey = string(v)
			case 14:
				m.GroupKey = string(v)
			case 15:
				k, val, err := decodeMapEntry(v)
				if err != nil {
					return m, err
				}
				m.Headers[k] = val
			default:
				m.unknown = append(m.unknown, num)
			}
		case typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return m, protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 5:
				m.Retry = int32(v)
			case 8:
				m.Timeout = int64(v)
			case 9:
				m.Deadline = int64(v)
			case 12:
				m.Retention = int64(v)
			case 6, 11, 13: // retried, last_failed_at, completed_at
			default:
				m.unknown = append(m.unknown, num)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return m, protowire.ParseError(n)
			}
			b = b[n:]
			m.unknown = append(m.unknown, num)
		}
	}
	return m, nil
}

// decodeMapEntry decodes a map<string,string> entry (key 1, value 2).
func decodeMapEntry(b []byte) (string, string, error) {
	var k, v string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			return "", "", fmt.Errorf("map entry field %d has wire type %d", num, typ)
		}
		s, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 1:
			k = string(s)
		case 2:
			v = string(s)
		}
	}
	return k, v, nil
}
