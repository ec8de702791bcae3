package asynqguard

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"sort"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from vectorInputs")

const vectorsPath = "testdata/vectors.json"

// vectorMessage is the message part of a test vector.
type vectorMessage struct {
	Type       string            `json:"type"`
	PayloadHex string            `json:"payload_hex"`
	ID         string            `json:"id"`
	Queue      string            `json:"queue"`
	Retry      int32             `json:"retry"`
	Timeout    int64             `json:"timeout"`
	Deadline   int64             `json:"deadline"`
	UniqueKey  string            `json:"unique_key"`
	Retention  int64             `json:"retention"`
	GroupKey   string            `json:"group_key"`
	Headers    map[string]string `json:"headers"`
}

// vector is one entry of testdata/vectors.json.
type vector struct {
	Name            string        `json:"name"`
	KeyID           string        `json:"key_id"`
	Key             string        `json:"key"`
	Message         vectorMessage `json:"message"`
	CanonicalHex    string        `json:"canonical_hex"`
	Signature       string        `json:"signature"`
	E2ECanonicalHex string        `json:"e2e_canonical_hex"`
	E2ESignature    string        `json:"e2e_signature"`
}

func (m vectorMessage) fields(t *testing.T) Fields {
	t.Helper()
	payload, err := hex.DecodeString(m.PayloadHex)
	if err != nil {
		t.Fatalf("payload_hex: %v", err)
	}
	return Fields{
		Type: m.Type, Payload: payload, ID: m.ID, Queue: m.Queue, Retry: m.Retry,
		Timeout: m.Timeout, Deadline: m.Deadline, UniqueKey: m.UniqueKey,
		Retention: m.Retention, GroupKey: m.GroupKey, Headers: m.Headers,
	}
}

const (
	vecKeyA  = "k2026a"
	vecKeyAS = "0123456789abcdef0123456789abcdef" // exactly 32 bytes
	vecKeyB  = "rotate_2-B"
	vecKeyBS = "a much longer secret: 40 bytes long!!!!!"
)

var allFieldsPayload = []byte(`{"to":"user@example.com","template":"welcome"}`)

// vectorInputs are the messages of testdata/vectors.json.
func vectorInputs() []vector {
	return []vector{
		{Name: "minimal", KeyID: vecKeyA, Key: vecKeyAS, Message: vectorMessage{
			Type: "ping", ID: "1", Queue: "default", Headers: map[string]string{},
		}},
		{Name: "all-fields", KeyID: vecKeyA, Key: vecKeyAS, Message: vectorMessage{
			Type:       "email:send",
			PayloadHex: hex.EncodeToString(allFieldsPayload),
			ID:         "0f8e6a8c-3b1d-4c52-9a7e-5d2f1e0b9c44",
			Queue:      "critical",
			Retry:      25,
			Timeout:    1800,
			Deadline:   1767225600,
			UniqueKey:  uniqueKey("critical", "email:send", allFieldsPayload),
			Retention:  86400,
			GroupKey:   "batch-7",
			Headers:    map[string]string{"trace-id": "4bf92f3577b34da6", "tenant": "acme"},
		}},
		{Name: "negative-values", KeyID: vecKeyB, Key: vecKeyBS, Message: vectorMessage{
			Type: "report:build", PayloadHex: hex.EncodeToString([]byte("x")), ID: "neg",
			Queue: "low", Retry: -1, Timeout: -5, Deadline: -100, Retention: -1,
			Headers: map[string]string{},
		}},
		{Name: "headers-with-signature-headers", KeyID: vecKeyA, Key: vecKeyAS, Message: vectorMessage{
			Type: "image:resize", PayloadHex: hex.EncodeToString([]byte("img-42")), ID: "hdr-1",
			Queue: "default", Retry: 3, Timeout: 60,
			Headers: map[string]string{
				"b": "2", "a": "1", "aa": "", "B": "upper", "ä": "umlaut key", "": "empty key",
				SignatureHeader: "v1:k2026a:" + string(bytes.Repeat([]byte("0"), 64)),
				E2EHeader:       "v1:k2026a:" + string(bytes.Repeat([]byte("f"), 64)),
			},
		}},
		{Name: "utf8-and-binary-payload", KeyID: vecKeyB, Key: vecKeyBS, Message: vectorMessage{
			Type:       "émoji:✓",
			PayloadHex: "00ff80fe0a0d7f" + hex.EncodeToString([]byte("日本語")) + "00",
			ID:         "ид-7",
			Queue:      "队列",
			Retry:      2147483647,
			Timeout:    0,
			Deadline:   4102444800,
			GroupKey:   "grüppe",
			Headers:    map[string]string{"ключ": "значение", "x-bin": "\u00ff\u0000end"},
		}},
		{Name: "empty-payload", KeyID: vecKeyA, Key: vecKeyAS, Message: vectorMessage{
			Type: "noop", PayloadHex: "", ID: "empty-1", Queue: "default", Retry: 25,
			Timeout:   1800,
			UniqueKey: "asynq:{default}:unique:noop:",
			Headers:   map[string]string{},
		}},
	}
}

// fill computes the forms and signatures of v.
func fill(t *testing.T, v vector) vector {
	t.Helper()
	key, err := NewKey(v.KeyID, []byte(v.Key))
	if err != nil {
		t.Fatal(err)
	}
	f := v.Message.fields(t)
	c, e := Canonical(f), E2E(f)
	v.CanonicalHex = hex.EncodeToString(c)
	v.E2ECanonicalHex = hex.EncodeToString(e)
	if v.Signature, err = SignForm(key, c); err != nil {
		t.Fatal(err)
	}
	if v.E2ESignature, err = SignForm(key, e); err != nil {
		t.Fatal(err)
	}
	return v
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	data, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 5 {
		t.Fatalf("only %d vectors", len(vs))
	}
	return vs
}

func TestVectors(t *testing.T) {
	if *update {
		var out []vector
		for _, v := range vectorInputs() {
			out = append(out, fill(t, v))
		}
		data, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsPath, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			got := fill(t, v)
			if got.CanonicalHex != v.CanonicalHex {
				t.Errorf("canonical\n got %s\nwant %s", got.CanonicalHex, v.CanonicalHex)
			}
			if got.E2ECanonicalHex != v.E2ECanonicalHex {
				t.Errorf("e2e canonical\n got %s\nwant %s", got.E2ECanonicalHex, v.E2ECanonicalHex)
			}
			if got.Signature != v.Signature || got.E2ESignature != v.E2ESignature {
				t.Errorf("signatures: got %s / %s, want %s / %s", got.Signature, got.E2ESignature, v.Signature, v.E2ESignature)
			}
			key := Key{ID: v.KeyID, Secret: []byte(v.Key)}
			c, _ := hex.DecodeString(v.CanonicalHex)
			e, _ := hex.DecodeString(v.E2ECanonicalHex)
			if err := VerifyForm(c, v.Signature, key); err != nil {
				t.Errorf("signature does not verify: %v", err)
			}
			if err := VerifyForm(e, v.E2ESignature, key); err != nil {
				t.Errorf("e2e signature does not verify: %v", err)
			}
			if err := VerifyForm(c, v.E2ESignature, key); err == nil {
				t.Error("e2e signature verifies the canonical form")
			}
		})
	}
}

// TestVectorsCoverage checks the vector file covers what the format needs.
func TestVectorsCoverage(t *testing.T) {
	var sawNeg, sawSigHeaders, sawEmpty, sawBinary, sawAll bool
	for _, v := range loadVectors(t) {
		m := v.Message
		sawNeg = sawNeg || m.Timeout < 0 && m.Deadline < 0
		_, s := m.Headers[SignatureHeader]
		_, e := m.Headers[E2EHeader]
		sawSigHeaders = sawSigHeaders || s && e
		sawEmpty = sawEmpty || m.PayloadHex == ""
		p, _ := hex.DecodeString(m.PayloadHex)
		sawBinary = sawBinary || bytes.IndexByte(p, 0xff) >= 0
		sawAll = sawAll || m.Type != "" && len(p) > 0 && m.ID != "" && m.Queue != "" && m.Retry != 0 &&
			m.Timeout != 0 && m.Deadline != 0 && m.UniqueKey != "" && m.Retention != 0 && m.GroupKey != "" && len(m.Headers) > 0
	}
	if !sawNeg || !sawSigHeaders || !sawEmpty || !sawBinary || !sawAll {
		t.Fatalf("coverage: negative=%v sig-headers=%v empty=%v binary=%v all=%v", sawNeg, sawSigHeaders, sawEmpty, sawBinary, sawAll)
	}
}

// TestCanonicalByHand spells out the canonical and end-to-end forms of the
// "minimal" and "negative-values" vectors byte by byte, following
// docs/integrity.md without calling Canonical or E2E.
func TestCanonicalByHand(t *testing.T) {
	want := map[string]string{
		"minimal": "" +
			hex.EncodeToString([]byte("asynq-guard-v1")) + "00" +
			"0000000000000004" + "70696e67" + // type "ping"
			"0000000000000000" + // payload: empty
			"0000000000000001" + "31" + // id "1"
			"0000000000000007" + "64656661756c74" + // queue "default"
			"0000000000000000" + // retry 0
			"0000000000000000" + // timeout 0
			"0000000000000000" + // deadline 0
			"0000000000000000" + // unique_key ""
			"0000000000000000" + // retention 0
			"0000000000000000" + // group_key ""
			"0000000000000000", // headers: count 0
		"negative-values": "" +
			"6173796e712d67756172642d7631" + "00" + // "asynq-guard-v1" 0x00
			"000000000000000c" + "7265706f72743a6275696c64" + // type "report:build"
			"0000000000000001" + "78" + // payload "x"
			"0000000000000003" + "6e6567" + // id "neg"
			"0000000000000003" + "6c6f77" + // queue "low"
			"ffffffffffffffff" + // retry -1, widened from int32
			"fffffffffffffffb" + // timeout -5
			"ffffffffffffff9c" + // deadline -100
			"0000000000000000" + // unique_key ""
			"ffffffffffffffff" + // retention -1
			"0000000000000000" + // group_key ""
			"0000000000000000", // headers: count 0
	}
	wantE2E := map[string]string{
		"minimal": "" +
			hex.EncodeToString([]byte("asynq-guard-e2e-v1")) + "00" +
			"0000000000000004" + "70696e67" +
			"0000000000000000" +
			"0000000000000001" + "31" +
			"0000000000000007" + "64656661756c74" +
			"0000000000000000" + // retry
			"0000000000000000", // headers
	}
	for _, v := range loadVectors(t) {
		if w, ok := want[v.Name]; ok {
			if v.CanonicalHex != w {
				t.Errorf("%s: canonical_hex\n got %s\nwant %s", v.Name, v.CanonicalHex, w)
			}
			delete(want, v.Name)
		}
		if w, ok := wantE2E[v.Name]; ok {
			if v.E2ECanonicalHex != w {
				t.Errorf("%s: e2e_canonical_hex\n got %s\nwant %s", v.Name, v.E2ECanonicalHex, w)
			}
		}
	}
	if len(want) != 0 {
		t.Errorf("vectors missing: %v", want)
	}
}

// TestCanonicalIndependent rebuilds every vector's forms with a separate,
// straightforward encoder written from the doc, including the header
// ordering and exclusions.
func TestCanonicalIndependent(t *testing.T) {
	u64 := func(b *bytes.Buffer, v uint64) {
		var x [8]byte
		binary.BigEndian.PutUint64(x[:], v)
		b.Write(x[:])
	}
	str := func(b *bytes.Buffer, s []byte) { u64(b, uint64(len(s))); b.Write(s) }
	hdrs := func(b *bytes.Buffer, h map[string]string) {
		var keys []string
		for k := range h {
			if k != "asynq-guard-signature" && k != "asynq-guard-e2e" {
				keys = append(keys, k)
			}
		}
		sort.Slice(keys, func(i, j int) bool { return bytes.Compare([]byte(keys[i]), []byte(keys[j])) < 0 })
		u64(b, uint64(len(keys)))
		for _, k := range keys {
			str(b, []byte(k))
			str(b, []byte(h[k]))
		}
	}
	for _, v := range loadVectors(t) {
		m := v.Message
		p, _ := hex.DecodeString(m.PayloadHex)
		var c bytes.Buffer
		c.WriteString("asynq-guard-v1\x00")
		str(&c, []byte(m.Type))
		str(&c, p)
		str(&c, []byte(m.ID))
		str(&c, []byte(m.Queue))
		u64(&c, uint64(int64(m.Retry)))
		u64(&c, uint64(m.Timeout))
		u64(&c, uint64(m.Deadline))
		str(&c, []byte(m.UniqueKey))
		u64(&c, uint64(m.Retention))
		str(&c, []byte(m.GroupKey))
		hdrs(&c, m.Headers)
		if got := hex.EncodeToString(c.Bytes()); got != v.CanonicalHex {
			t.Errorf("%s: canonical differs\n got %s\nwant %s", v.Name, got, v.CanonicalHex)
		}
		var e bytes.Buffer
		e.WriteString("asynq-guard-e2e-v1\x00")
		str(&e, []byte(m.Type))
		str(&e, p)
		str(&e, []byte(m.ID))
		str(&e, []byte(m.Queue))
		u64(&e, uint64(int64(m.Retry)))
		hdrs(&e, m.Headers)
		if got := hex.EncodeToString(e.Bytes()); got != v.E2ECanonicalHex {
			t.Errorf("%s: e2e canonical differs\n got %s\nwant %s", v.Name, got, v.E2ECanonicalHex)
		}
	}
}
