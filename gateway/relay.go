package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// RelayJSONLines logs each line read from r through logger() until r
// ends: the switchyard binary points os.Stderr at a pipe and relays what
// libraries write there (flagd's in-process service logs JSON to os.Stderr
// with no option to pass a logger), so the process's output follows
// log.format. A line that is a zap JSON object is logged with its level
// (at most error: a library's panic and fatal levels must not stop us),
// message and fields; its time, logger name, caller and stack trace are
// dropped (ours apply). Any other line is logged at info as is. logger is
// called per line, so the caller may swap the logger once its own is
// built.
func RelayJSONLines(r io.Reader, logger func() *zap.Logger) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		lvl, msg, fields, ok := decodeZapJSON(line)
		if !ok {
			lvl, msg, fields = zapcore.InfoLevel, string(line), nil
		}
		if ce := logger().Check(lvl, msg); ce != nil {
			ce.Write(fields...)
		}
	}
	// A line over 1 MiB, or a read error: keep draining so that flagd never
	// blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

// decodeZapJSON decodes one line of zap's JSON encoder, fields in order.
func decodeZapJSON(line []byte) (lvl zapcore.Level, msg string, fields []zap.Field, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, "", nil, false
	}
	lvl = zapcore.InfoLevel
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, "", nil, false
		}
		key, _ := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return 0, "", nil, false
		}
		switch key {
		case "level":
			s, _ := v.(string)
			if err := lvl.UnmarshalText([]byte(s)); err != nil {
				lvl = zapcore.InfoLevel
			}
		case "msg":
			msg, _ = v.(string)
		case "ts", "logger", "caller", "stacktrace":
		default:
			if n, isNum := v.(json.Number); isNum {
				if i, err := n.Int64(); err == nil {
					v = i
				} else if f, err := n.Float64(); err == nil {
					v = f
				}
			}
			fields = append(fields, zap.Any(key, v))
		}
	}
	return min(lvl, zapcore.ErrorLevel), msg, fields, true
}
