// Command lincheck checks a history of ZooKeeper client operations for linearizability with
// porcupine (github.com/anishathalye/porcupine), as etcd's robustness tests check etcd's.
//
// Usage:
//
//	lincheck [-visualize FILE.html] [-timeout 60s] HISTORY.jsonl
//
// The history is what `zkjudge.py history` writes: one JSON object per line,
//
//	{"client": 0, "op": "get"|"set"|"cas"|"init", "key": "/h/k0",
//	 "input": {"value": "c0-1", "version": 3},
//	 "output": {"value": "c1-7", "version": 4} | {"version": 4} | {"error": "BadVersionError"},
//	 "call": 123, "return": 456, "outcome": "ok"|"failed"|"unknown"}
//
// Each key is a register with a version, as a znode's data and its stat's version: `set`
// writes a value and bumps the version by one; `cas` (a set with an expected version) does so
// only when the expected version is the current one, and fails with BadVersionError otherwise;
// `get` returns the value and the version. An `init` line gives a key's state before any
// client runs (without one a key starts as "" at version 0). Keys are never deleted, so
// NoNodeError is never a legal answer.
//
// An operation whose outcome is unknown (connection loss, session expiry, a timeout) may or may
// not have taken effect: as etcd does, it returns at the end of the history with no output,
// so the checker may order it anywhere after its call, including after every other operation
// (where it changes nothing anyone observed). A read with an unknown outcome observed nothing
// and is dropped.
//
// It prints one JSON verdict on stdout. Exit status: 0 linearizable, 1 not linearizable, 2 an
// error (bad input, or the check timed out); the JSON then has an "error" key.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// record is one line of the history file.
type record struct {
	Client int    `json:"client"`
	Op     string `json:"op"`
	Key    string `json:"key"`
	Input  struct {
		Value   *string `json:"value"`
		Version *int64  `json:"version"`
		Read    string  `json:"read"` // how a get read: "sync" (sync, then get) or "local"
	} `json:"input"`
	Output struct {
		Value   *string `json:"value"`
		Version *int64  `json:"version"`
		Error   string  `json:"error"`
	} `json:"output"`
	Call    int64  `json:"call"`
	Return  int64  `json:"return"`
	Outcome string `json:"outcome"`
}

// state is one register: a znode's data and version.
type state struct {
	Value   string
	Version int64
}

// input is what an operation asked for.
type input struct {
	Op      string // init, get, set, cas
	Value   string // written by set and cas
	Version int64  // expected by cas
}

// output is what an operation observed.
type output struct {
	Outcome string // ok, failed, unknown
	Value   string // read by get, or the initial value of init
	Version int64  // read by get, written by set and cas, or the initial version of init
	Error   string // of a failed operation
}

func step(s state, in input, out output) (bool, state) {
	if out.Outcome == "failed" && out.Error == "NoNodeError" {
		return false, s // keys are created first and never deleted
	}
	switch in.Op {
	case "init":
		return true, state{out.Value, out.Version}
	case "get":
		if out.Outcome == "ok" {
			return out.Value == s.Value && out.Version == s.Version, s
		}
		return true, s
	case "set":
		next := state{in.Value, s.Version + 1}
		switch out.Outcome {
		case "ok":
			return out.Version == next.Version, next
		case "unknown":
			return true, next
		}
		return true, s
	case "cas":
		match := s.Version == in.Version
		next := state{in.Value, s.Version + 1}
		switch out.Outcome {
		case "ok":
			return match && out.Version == next.Version, next
		case "unknown":
			if match {
				return true, next
			}
			return true, s
		}
		if out.Error == "BadVersionError" {
			return !match, s
		}
		return true, s
	}
	return false, s
}

func describeOperation(i interface{}, o interface{}) string {
	in, out := i.(input), o.(output)
	var call string
	switch in.Op {
	case "init":
		return fmt.Sprintf("init -> %q@v%d", out.Value, out.Version)
	case "get":
		call = "get()"
	case "set":
		call = fmt.Sprintf("set(%q)", in.Value)
	case "cas":
		call = fmt.Sprintf("cas(%q, v%d)", in.Value, in.Version)
	default:
		call = in.Op
	}
	switch {
	case out.Outcome == "unknown":
		return call + " -> unknown"
	case out.Outcome == "failed":
		return call + " -> " + out.Error
	case in.Op == "get":
		return fmt.Sprintf("%s -> %q@v%d", call, out.Value, out.Version)
	default:
		return fmt.Sprintf("%s -> v%d", call, out.Version)
	}
}

func describeState(s interface{}) string {
	st := s.(state)
	return fmt.Sprintf("%q@v%d", st.Value, st.Version)
}

// model is a register per key; histories are partitioned by key.
var model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			key := op.Metadata.(meta).Key
			if _, seen := byKey[key]; !seen {
				keys = append(keys, key)
			}
			byKey[key] = append(byKey[key], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return state{} },
	Step: func(s, i, o interface{}) (bool, interface{}) {
		return step(s.(state), i.(input), o.(output))
	},
	Hash: func(s interface{}) uint64 {
		st := s.(state)
		h := fnv.New64a()
		fmt.Fprintf(h, "%d:%s", st.Version, st.Value)
		return h.Sum64()
	},
	DescribeOperation: describeOperation,
	DescribeState:     describeState,
	DescribeOperationMetadata: func(m interface{}) string {
		md := m.(meta)
		return fmt.Sprintf("%s, history line %d", md.Key, md.Line)
	},
}

// meta ties an operation to its key and its line in the history.
type meta struct {
	Key  string
	Line int
}

// keyVerdict is the result for one key.
type keyVerdict struct {
	Operations int    `json:"operations"`
	Result     string `json:"result"`
	Ok         int    `json:"ok"`
	Failed     int    `json:"failed"`
	Unknown    int    `json:"unknown"`
}

// failure names the key that is not linearizable and why.
type failure struct {
	Key         string `json:"key"`
	Description string `json:"description"`
}

// verdict is printed on stdout.
type verdict struct {
	Linearizable  bool                   `json:"linearizable"`
	Operations    int                    `json:"operations"`
	Checked       int                    `json:"checked"`
	DroppedReads  int                    `json:"dropped_reads"`
	UnknownWrites int                    `json:"unknown_writes"`
	PerKey        map[string]*keyVerdict `json:"per_key"`
	Failure       *failure               `json:"failure"`
	Visualization *string                `json:"visualization"`
	Seconds       float64                `json:"seconds"`
	Error         string                 `json:"error,omitempty"`
}

// load reads a history and turns it into porcupine operations; unknown outcomes return at the
// end of the history.
func load(r io.Reader, v *verdict) ([]porcupine.Operation, error) {
	var records []record
	var lines []int
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64*1024), 16*1024*1024)
	line := 0
	var end int64
	for scanner.Scan() {
		line++
		text := strings.TrimSpace(scanner.Text())
		if text == "" {
			continue
		}
		var rec record
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rec); err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		if err := validate(&rec); err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		if rec.Return > end {
			end = rec.Return
		}
		records = append(records, rec)
		lines = append(lines, line)
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	firstCall := map[string]int64{}
	initReturn := map[string]int64{}
	for _, rec := range records {
		if rec.Op == "init" {
			if _, dup := initReturn[rec.Key]; dup {
				return nil, fmt.Errorf("two init lines for %s", rec.Key)
			}
			initReturn[rec.Key] = rec.Return
		} else if c, seen := firstCall[rec.Key]; !seen || rec.Call < c {
			firstCall[rec.Key] = rec.Call
		}
	}
	for key, ret := range initReturn {
		if c, seen := firstCall[key]; seen && c <= ret {
			return nil, fmt.Errorf("the init of %s returns at %d, after an operation on it is called (%d)", key, ret, c)
		}
	}
	var ops []porcupine.Operation
	for i, rec := range records {
		kv := v.PerKey[rec.Key]
		if kv == nil {
			kv = &keyVerdict{Result: "Ok"}
			v.PerKey[rec.Key] = kv
		}
		in := input{Op: rec.Op}
		if rec.Input.Value != nil {
			in.Value = *rec.Input.Value
		}
		if rec.Input.Version != nil {
			in.Version = *rec.Input.Version
		}
		out := output{Outcome: rec.Outcome, Error: rec.Output.Error}
		if rec.Output.Value != nil {
			out.Value = *rec.Output.Value
		}
		if rec.Output.Version != nil {
			out.Version = *rec.Output.Version
		}
		ret := rec.Return
		if rec.Op != "init" {
			v.Operations++
			switch rec.Outcome {
			case "ok":
				kv.Ok++
			case "failed":
				kv.Failed++
			case "unknown":
				kv.Unknown++
			}
			if rec.Outcome == "unknown" {
				if rec.Op == "get" {
					v.DroppedReads++
					continue
				}
				v.UnknownWrites++
				ret = end + 1
			}
			kv.Operations++
			v.Checked++
		}
		ops = append(ops, porcupine.Operation{
			ClientId: rec.Client + 1, // init is client -1; porcupine's ids start at 0
			Input:    in,
			Call:     rec.Call,
			Output:   out,
			Return:   ret,
			Metadata: meta{Key: rec.Key, Line: lines[i]},
		})
	}
	return ops, nil
}

func validate(rec *record) error {
	switch rec.Op {
	case "init", "get", "set", "cas":
	default:
		return fmt.Errorf("unknown op %q", rec.Op)
	}
	switch rec.Outcome {
	case "ok", "failed", "unknown":
	default:
		return fmt.Errorf("unknown outcome %q", rec.Outcome)
	}
	if rec.Key == "" {
		return errors.New("no key")
	}
	if rec.Return < rec.Call {
		return fmt.Errorf("returns (%d) before it is called (%d)", rec.Return, rec.Call)
	}
	if (rec.Op == "set" || rec.Op == "cas") && rec.Input.Value == nil {
		return fmt.Errorf("%s without input.value", rec.Op)
	}
	if rec.Op == "cas" && rec.Input.Version == nil {
		return errors.New("cas without input.version")
	}
	if rec.Outcome == "ok" {
		if rec.Output.Version == nil {
			return fmt.Errorf("ok %s without output.version", rec.Op)
		}
		if (rec.Op == "get" || rec.Op == "init") && rec.Output.Value == nil {
			return fmt.Errorf("ok %s without output.value", rec.Op)
		}
	} else if rec.Op == "init" {
		return errors.New("an init must be ok")
	} else if rec.Output.Error == "" {
		return fmt.Errorf("%s %s without output.error", rec.Outcome, rec.Op)
	}
	return nil
}

// explain describes why one key's operations are not linearizable: the longest linearizable
// prefix porcupine found, the state after it, and the operation that must come next (the one
// of the rest that returns first) but cannot.
func explain(ops []porcupine.Operation, timeout time.Duration) string {
	single := model
	single.Partition = nil
	result, info := porcupine.CheckOperationsVerbose(single, ops, timeout)
	if result != porcupine.Illegal {
		return fmt.Sprintf("porcupine's second, verbose check says %s", result)
	}
	var longest []porcupine.Operation
	for _, partition := range info.PartialLinearizationsOperations() {
		for _, l := range partition {
			if len(l) > len(longest) {
				longest = l
			}
		}
	}
	s := model.Init().(state)
	in := map[int]bool{}
	for _, op := range longest {
		_, next := step(s, op.Input.(input), op.Output.(output))
		s = next
		in[op.Metadata.(meta).Line] = true
	}
	var blocking *porcupine.Operation
	for i := range ops {
		op := &ops[i]
		if in[op.Metadata.(meta).Line] {
			continue
		}
		if blocking == nil || op.Return < blocking.Return {
			blocking = op
		}
	}
	desc := fmt.Sprintf("at most %d of the key's %d operations (its init included) linearize, leaving %s",
		len(longest), len(ops), describeState(s))
	if blocking != nil {
		desc += fmt.Sprintf("; then %s by client %d (history line %d) cannot take effect",
			describeOperation(blocking.Input, blocking.Output), blocking.ClientId-1, blocking.Metadata.(meta).Line)
	}
	return desc
}

func main() {
	visualize := flag.String("visualize", "", "write porcupine's HTML visualization of the history to this file")
	timeout := flag.Duration("timeout", 60*time.Second, "give up on a key after this long (then exit 2)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: lincheck [-visualize FILE.html] [-timeout 60s] HISTORY.jsonl")
		flag.PrintDefaults()
	}
	flag.Parse()
	os.Exit(run(flag.Args(), *visualize, *timeout, os.Stdout))
}

func run(args []string, visualize string, timeout time.Duration, stdout io.Writer) int {
	started := time.Now()
	v := &verdict{PerKey: map[string]*keyVerdict{}}
	finish := func(code int) int {
		v.Seconds = time.Since(started).Seconds()
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			fmt.Fprintf(os.Stderr, "lincheck: writing the verdict: %v\n", err)
			return 2
		}
		return code
	}
	fail := func(err error) int {
		v.Linearizable = false
		v.Error = err.Error()
		return finish(2)
	}
	if len(args) != 1 {
		return fail(errors.New("usage: lincheck [-visualize FILE.html] [-timeout 60s] HISTORY.jsonl"))
	}
	f, err := os.Open(args[0])
	if err != nil {
		return fail(err)
	}
	ops, err := load(f, v)
	f.Close()
	if err != nil {
		return fail(fmt.Errorf("reading %s: %v", args[0], err))
	}
	single := model
	single.Partition = nil
	v.Linearizable = true
	var timedOut []string
	for _, part := range model.Partition(ops) {
		key := part[0].Metadata.(meta).Key
		result := porcupine.CheckOperationsTimeout(single, part, timeout)
		v.PerKey[key].Result = string(result)
		switch result {
		case porcupine.Illegal:
			v.Linearizable = false
			if v.Failure == nil {
				v.Failure = &failure{Key: key, Description: explain(part, timeout)}
			}
		case porcupine.Unknown:
			timedOut = append(timedOut, key)
		}
	}
	if visualize != "" {
		_, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
		if err := porcupine.VisualizePath(model, info, visualize); err != nil {
			return fail(fmt.Errorf("writing the visualization: %v", err))
		}
		v.Visualization = &visualize
	}
	switch {
	case !v.Linearizable:
		return finish(1)
	case len(timedOut) > 0:
		return fail(fmt.Errorf("the check timed out after %s on %s", timeout, strings.Join(timedOut, ", ")))
	}
	return finish(0)
}
