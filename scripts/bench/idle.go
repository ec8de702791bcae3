package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// runIdle opens authenticated connections that then stay idle, in
// stages: after each stage it prints "stage <connections open>" and waits
// for SIGUSR1 before the next; after the last it waits for SIGTERM or
// SIGINT and exits, closing them all. Each connection sends AUTH (when a
// password is given) and PING and reads both replies, so that a proxy has
// its upstream connection open too.
func runIdle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	t := targetFlags(fs)
	stagesFlag := fs.String("stages", "1000", "comma-separated connection counts to stop at")
	dialers := fs.Int("dialers", 32, "connections opened at once")
	fs.Parse(args)
	var stages []int
	for _, s := range strings.Split(*stagesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || (len(stages) > 0 && n <= stages[len(stages)-1]) {
			return fmt.Errorf("bad -stages %q: increasing positive counts", *stagesFlag)
		}
		stages = append(stages, n)
	}
	next := make(chan os.Signal, 1)
	signal.Notify(next, syscall.SIGUSR1)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for k, n := range stages {
		opened, err := openIdle(t, n-len(conns), *dialers)
		conns = append(conns, opened...)
		if err != nil {
			return fmt.Errorf("after %d connections: %w", len(conns), err)
		}
		fmt.Printf("stage %d\n", len(conns))
		if k < len(stages)-1 {
			select {
			case <-next:
			case <-stop:
				return nil
			}
		}
	}
	<-stop
	return nil
}

// openIdle opens n connections, `dialers` at a time.
func openIdle(t *target, n, dialers int) ([]net.Conn, error) {
	var mu sync.Mutex
	var conns []net.Conn
	var firstErr error
	work := make(chan struct{})
	var wg sync.WaitGroup
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				c, err := openOne(t)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if c != nil {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	return conns, firstErr
}

func resp(args ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return []byte(b.String())
}

func openOne(t *target) (net.Conn, error) {
	c, err := net.Dial("tcp", t.addr)
	if err != nil {
		return nil, err
	}
	var req []byte
	want := []string{}
	if t.pass != "" {
		if t.user != "" {
			req = append(req, resp("AUTH", t.user, t.pass)...)
		} else {
			req = append(req, resp("AUTH", t.pass)...)
		}
		want = append(want, "+OK")
	}
	req = append(req, resp("PING")...)
	want = append(want, "+PONG")
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(c, 64)
	for _, w := range want {
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != w {
			c.Close()
			return nil, fmt.Errorf("wanted %s, got %q (%v)", w, strings.TrimSpace(line), err)
		}
	}
	return c, nil
}
