package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// clock is what the scripts' os.time() and os.date() read. The action tests freeze it (see
// customizations.go), so that an action stamping the time has one exact expected output.
var clock = time.Now

// runLua runs a script the way Argo CD runs a health, discovery or action script taken from argocd-cm
// (argo-cd util/lua lua.go, runLuaWithResourceActionParameters, with UseOpenLibs false, its default):
//   - a fresh gopher-lua state WITHOUT the standard libraries; only package, base and table are opened,
//     plus a safe `os` holding time() and date() only, also reachable as require("os"). So string.*,
//     math.* and s:find(...) are NOT available: a script that uses them works in a harness with open
//     libs and fails in Argo CD;
//   - the global `obj` is the object converted value by value (maps to tables, arrays to sequences,
//     numbers to numbers, null to nil), and `actionParams` a table of the action's parameters;
//   - a one-second execution limit;
//   - a runtime error loses its Lua stack trace, as Argo CD strips it before showing the message.
//
// The caller closes the returned state; on success the script's result is on top of its stack.
func runLua(obj map[string]interface{}, script string, params map[string]string) (*lua.LState, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			l.Close()
			return nil, err
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)

	actionParams := l.CreateTable(0, len(params))
	for name, value := range params {
		actionParams.RawSetH(lua.LString(name), lua.LString(value))
	}
	l.SetGlobal("actionParams", actionParams)
	l.SetGlobal("obj", toLua(l, obj))

	err := l.DoString(script)
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
		apiErr.StackTrace = ""
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// toLua mirrors Argo CD's decodeValue.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(toLua(l, item))
		}
		return arr
	case map[string]interface{}:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), toLua(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// The os library Argo CD gives scripts: time() and date() only (no exit, no files, no environment).
var safeOsFuncs = map[string]lua.LGFunction{"time": osTime, "date": osDate}

func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.OsLibName, safeOsFuncs))
	return 1
}

// osTime is os.time([table]): now, or the time of a date table (local time, hour 12 by default).
func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(clock().Unix()))
		return 1
	}
	tbl := l.CheckTable(1)
	field := func(name string, def int) int {
		if n, ok := tbl.RawGetString(name).(lua.LNumber); ok {
			return int(n)
		}
		return def
	}
	t := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(t.Unix()))
	return 1
}

// osDate is os.date([format [, time]]): a leading "!" means UTC, "*t" a date table, otherwise the
// strftime-style format with the flags gopher-lua (and so Argo CD) knows; others are kept verbatim.
func osDate(l *lua.LState) int {
	t := clock()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
		if strings.HasPrefix(format, "!") {
			t = t.UTC()
			format = strings.TrimLeft(format, "!")
		}
		if l.GetTop() >= 2 {
			t = time.Unix(l.CheckInt64(2), 0)
		}
		if strings.HasPrefix(format, "*t") {
			ret := l.NewTable()
			for name, v := range map[string]int{
				"year": t.Year(), "month": int(t.Month()), "day": t.Day(), "hour": t.Hour(),
				"min": t.Minute(), "sec": t.Second(), "wday": int(t.Weekday()) + 1, "yday": 0,
			} {
				ret.RawSetString(name, lua.LNumber(v))
			}
			ret.RawSetString("isdst", lua.LFalse)
			l.Push(ret)
			return 1
		}
	}
	l.Push(lua.LString(strftime(t, format)))
	return 1
}

// Go layouts of the strftime flags gopher-lua's os.date supports. `%a` is rendered "mon" there (a Go
// layout typo upstream), and the harness keeps that, so a script relying on it is caught here too.
var strftimeLayouts = map[byte]string{
	'a': "mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'c': "02 Jan 06 15:04 MST", 'd': "02",
	'F': "2006-01-02", 'H': "15", 'I': "03", 'm': "01", 'M': "04", 'p': "PM", 'P': "pm", 'S': "05",
	'x': "15/04/05", 'X': "15:04:05", 'y': "06", 'Y': "2006", 'z': "-0700", 'Z': "MST",
}

func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i == len(format)-1 { // a trailing lone '%' is dropped
			break
		}
		i++
		flag := format[i]
		switch {
		case flag == '%':
			b.WriteByte('%')
		case flag == 'w':
			b.WriteString(strconv.Itoa(int(t.Weekday())))
		case strftimeLayouts[flag] != "":
			b.WriteString(t.Format(strftimeLayouts[flag]))
		default:
			b.WriteByte('%')
			b.WriteByte(flag)
		}
	}
	return b.String()
}
