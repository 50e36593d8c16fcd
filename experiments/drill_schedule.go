package experiments

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is a parsed five-field cron expression (minute hour day-of-month month
// day-of-week, with *, lists, ranges, steps and Jan/Mon names) or one of @hourly, @daily,
// @weekly, @monthly. As in cron, when both day fields are restricted a day matching either
// one matches.
//
// It is parsed here rather than with a cron library so that the spec package needs no new
// dependency for five fields; the semantics are Vixie cron's, as robfig/cron's standard
// parser also implements them.
type Schedule struct {
	expr                          string
	minute, hour, dom, month, dow uint64
	domStar, dowStar              bool
}

var scheduleMacros = map[string]string{
	"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
	"@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
}

var (
	monthNames = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	dowNames   = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
)

// ParseSchedule parses a cron expression; the error says which field is wrong.
func ParseSchedule(expr string) (*Schedule, error) {
	s := &Schedule{expr: strings.TrimSpace(expr)}
	text := s.expr
	if m, ok := scheduleMacros[strings.ToLower(text)]; ok {
		text = m
	} else if strings.HasPrefix(text, "@") {
		return nil, fmt.Errorf("%q is not a schedule macro (@hourly, @daily, @weekly, @monthly, @yearly)", expr)
	}
	f := strings.Fields(text)
	if len(f) != 5 {
		return nil, fmt.Errorf("%q has %d fields; a schedule has five: minute hour day-of-month month day-of-week, e.g. \"0 10 * * Tue\"", expr, len(f))
	}
	var err error
	fields := []struct {
		name     string
		dst      *uint64
		lo, hi   int
		names    []string
		nameBase int
	}{
		{"minute", &s.minute, 0, 59, nil, 0},
		{"hour", &s.hour, 0, 23, nil, 0},
		{"day of month", &s.dom, 1, 31, nil, 0},
		{"month", &s.month, 1, 12, monthNames, 1},
		{"day of week", &s.dow, 0, 7, dowNames, 0},
	}
	for i, fd := range fields {
		if *fd.dst, err = parseCronField(f[i], fd.lo, fd.hi, fd.names, fd.nameBase); err != nil {
			return nil, fmt.Errorf("%q: %s field: %w", expr, fd.name, err)
		}
	}
	if s.dow&(1<<7) != 0 {
		s.dow |= 1 // 7 is Sunday too
	}
	s.domStar, s.dowStar = f[2] == "*" || f[2] == "?", f[4] == "*" || f[4] == "?"
	return s, nil
}

func parseCronField(f string, lo, hi int, names []string, nameBase int) (uint64, error) {
	var bits uint64
	num := func(s string) (int, error) {
		for i, n := range names {
			if strings.EqualFold(s, n) {
				return i + nameBase, nil
			}
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < lo || v > hi {
			return 0, fmt.Errorf("%q is not a number from %d to %d", s, lo, hi)
		}
		return v, nil
	}
	for _, part := range strings.Split(f, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			v, err := strconv.Atoi(stepText)
			if err != nil || v < 1 {
				return 0, fmt.Errorf("step %q is not a positive number", stepText)
			}
			step = v
		}
		var from, to int
		switch {
		case rng == "*" || rng == "?":
			from, to = lo, hi
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if from, err = num(a); err != nil {
				return 0, err
			}
			if to, err = num(b); err != nil {
				return 0, err
			}
			if to < from {
				return 0, fmt.Errorf("range %q runs backwards", rng)
			}
		default:
			v, err := num(rng)
			if err != nil {
				return 0, err
			}
			from, to = v, v
			if hasStep {
				to = hi
			}
		}
		for v := from; v <= to; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

// String is the expression as written.
func (s *Schedule) String() string { return s.expr }

// Next is the first minute strictly after t, in loc, that the schedule matches; the zero
// time when none does within five years (30 February).
func (s *Schedule) Next(t time.Time, loc *time.Location) time.Time {
	t = t.In(loc).Truncate(time.Minute).Add(time.Minute)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		if s.month&(1<<uint(t.Month())) == 0 {
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, loc)
			continue
		}
		if !s.dayMatches(t) {
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, loc)
			continue
		}
		if s.hour&(1<<uint(t.Hour())) == 0 {
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, loc)
			continue
		}
		if s.minute&(1<<uint(t.Minute())) == 0 {
			t = t.Add(time.Minute)
			continue
		}
		return t
	}
	return time.Time{}
}

func (s *Schedule) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<uint(t.Day())) != 0
	dow := s.dow&(1<<uint(t.Weekday())) != 0
	if s.domStar || s.dowStar {
		return dom && dow
	}
	return dom || dow
}

// NextRun is when serve starts this drill next after t (zero without a schedule).
func (d *Drill) NextRun(t time.Time) time.Time {
	if d.Spec.Schedule == "" {
		return time.Time{}
	}
	s, err := ParseSchedule(d.Spec.Schedule)
	if err != nil {
		return time.Time{}
	}
	loc, err := time.LoadLocation(d.Spec.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	return s.Next(t, loc)
}
