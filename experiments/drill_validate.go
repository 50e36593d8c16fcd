package experiments

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Validate checks the whole drill after defaults and returns every problem found. The
// parts a drill shares with experiments (traffic, prometheus, KPIs) are checked by the
// experiment validator itself, on the drill's own positions, so both say the same thing.
func (d *Drill) Validate() ErrorList {
	var errs ErrorList
	errorf := func(path, format string, a ...any) {
		errs = append(errs, &FieldError{Pos: d.Pos(path), Path: path, Msg: fmt.Sprintf(format, a...)})
	}
	s := &d.Spec
	switch d.APIVersion {
	case APIVersion:
	case "":
		errorf("apiVersion", "required: %s", APIVersion)
	default:
		errorf("apiVersion", "unsupported version %q; this verdict reads %s", d.APIVersion, APIVersion)
	}
	if d.Kind != KindDrill {
		errorf("kind", "must be %s, not %q", KindDrill, d.Kind)
	}
	switch n := d.Metadata.Name; {
	case n == "":
		errorf("metadata.name", "required")
	case len(n) > 63 || !dnsLabel.MatchString(n):
		errorf("metadata.name", "%q must be at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", n)
	}

	// clusters and drain
	if len(s.Clusters) < 2 {
		errorf("spec.clusters", "required: at least two clusters, the one drained and a survivor to take its traffic")
	}
	seen := map[string]bool{}
	for i, c := range s.Clusters {
		p := fmt.Sprintf("spec.clusters[%d]", i)
		switch {
		case c == "":
			errorf(p, "empty cluster name")
		case seen[c]:
			errorf(p, "duplicate cluster %q", c)
		}
		seen[c] = true
	}
	if len(s.Drain) == 0 {
		errorf("spec.drain", "required: the cluster to drain, or a list to rotate through on successive drills")
	}
	drained := map[string]bool{}
	for i, c := range s.Drain {
		p := fmt.Sprintf("spec.drain[%d]", i)
		switch {
		case c == "":
			errorf(p, "empty cluster name")
		case len(s.Clusters) > 0 && !seen[c]:
			msg := fmt.Sprintf("%q is not in spec.clusters", c)
			if hint := didYouMean(c, s.Clusters); hint != "" {
				msg += fmt.Sprintf("; did you mean %q?", hint)
			}
			errorf(p, "%s", msg)
		case drained[c]:
			errorf(p, "%q is listed twice", c)
		}
		drained[c] = true
	}

	// traffic: only the pool, never the experiment's ramp
	for _, f := range []string{"steps", "onPromote", "onRollback", "sourceOfTruth"} {
		if d.isSet("spec.traffic." + f) {
			errorf("spec.traffic."+f, "not used by a drill: it drains spec.drain to 0 for spec.hold and then restores the weights it found")
		}
	}

	if s.Hold < s.Interval || s.Hold <= 0 {
		errorf("spec.hold", "%s is shorter than one analysis interval (%s)", s.Hold, s.Interval)
	}
	if s.Interval < Duration(time.Second) {
		errorf("spec.interval", "must be at least 1s")
	}
	if !(s.Alpha > 0 && s.Alpha < 0.5) {
		errorf("spec.alpha", "must be between 0 and 0.5 (exclusive), got %v", s.Alpha)
	}

	// The shared parts, through the experiment validator.
	errs = append(errs, d.sharedErrors()...)

	if len(s.KPIs) == 0 && len(s.Guardrails) == 0 {
		errorf("spec.kpis", "required: at least one KPI (or spec.guardrails) to judge the survivors by")
	}
	for i, g := range s.Guardrails {
		p := fmt.Sprintf("spec.guardrails[%d]", i)
		if g.Guardrail == nil {
			errorf(p, "guardrail is required: spec.guardrails are judged by their absolute limit only (write {max: 2%%} or {min: …}); a KPI compared with the time before the drill belongs in spec.kpis")
		}
		if d.isSet(p + ".tolerance") {
			errorf(p+".tolerance", "not used: a guardrail is judged by its absolute limit; move the KPI to spec.kpis to compare it with the time before the drill")
		}
	}
	names := map[string]string{}
	for i, k := range s.KPIs {
		names[k.Name] = fmt.Sprintf("spec.kpis[%d]", i)
	}
	for i, g := range s.Guardrails {
		if prev, ok := names[g.Name]; ok && g.Name != "" {
			errorf(fmt.Sprintf("spec.guardrails[%d].name", i), "%q is already the name of %s", g.Name, prev)
		}
	}

	alarmNames := map[string]string{}
	for _, set := range []struct {
		path   string
		alarms []Alarm
	}{{"spec.blockingAlarms", s.BlockingAlarms}, {"spec.outcomeAlarms", s.OutcomeAlarms}} {
		for i, a := range set.alarms {
			p := fmt.Sprintf("%s[%d]", set.path, i)
			switch {
			case a.Name == "":
				errorf(p+".name", "required")
			case !kpiName.MatchString(a.Name):
				errorf(p+".name", "%q: use letters, digits, '-', '_' and '.'", a.Name)
			case alarmNames[set.path+"/"+a.Name] != "":
				errorf(p+".name", "duplicate alarm name %q", a.Name)
			}
			alarmNames[set.path+"/"+a.Name] = p
			if a.Query == "" {
				errorf(p+".query", "required: a PromQL query that returns a sample above 0 while the alarm fires")
			} else if _, _, err := ParseQuery(a.Query, d.Experiment(d.DrainAt(0)).Vars(d.DrainAt(0))); err != nil {
				errorf(p+".query", "%v", err)
			}
			switch {
			case a.For < 0:
				errorf(p+".for", "must not be negative")
			case a.For > 0 && set.path == "spec.blockingAlarms":
				errorf(p+".for", "not used by a blocking alarm: any sample above 0 when the drill would start blocks it")
			}
		}
	}

	loc, err := time.LoadLocation(s.TimeZone)
	if err != nil {
		errorf("spec.timeZone", "%q is not an IANA time zone like Europe/Berlin or UTC", s.TimeZone)
		loc = time.UTC
	}
	for i, w := range s.AllowedWindows {
		p := fmt.Sprintf("spec.allowedWindows[%d]", i)
		if len(w.Days) == 0 {
			errorf(p+".days", "required: the weekdays the window is open, e.g. [Mon, Tue, Wed, Thu]")
		}
		for j, day := range w.Days {
			if _, ok := parseWeekday(day); !ok {
				msg := fmt.Sprintf("%q is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)", day)
				if hint := didYouMean(day, weekdayNames); hint != "" {
					msg += fmt.Sprintf("; did you mean %q?", hint)
				}
				errorf(fmt.Sprintf("%s.days[%d]", p, j), "%s", msg)
			}
		}
		start, okS := parseClock(w.Start)
		end, okE := parseClock(w.End)
		if !okS {
			errorf(p+".start", "%q is not a time of day like 09:00", w.Start)
		}
		if !okE {
			errorf(p+".end", "%q is not a time of day like 16:00 (24:00 for midnight)", w.End)
		}
		if okS && okE && end <= start {
			errorf(p+".end", "%s is not after start %s; split a window over midnight in two", w.End, w.Start)
		}
		if okS && okE && end > start && end-start < s.Hold.Std() {
			errorf(p, "%s–%s is shorter than the drill's hold of %s: no drill could fit in it", w.Start, w.End, s.Hold)
		}
		if _, err := time.LoadLocation(w.TimeZone); err != nil {
			errorf(p+".timeZone", "%q is not an IANA time zone like Europe/Berlin or UTC", w.TimeZone)
		}
	}
	for i, day := range s.BlockedDates {
		if _, err := time.ParseInLocation(time.DateOnly, strings.TrimSpace(day), loc); err != nil {
			errorf(fmt.Sprintf("spec.blockedDates[%d]", i), "%q is not a date like 2026-12-24", day)
		}
	}
	if s.Schedule != "" {
		if _, err := ParseSchedule(s.Schedule); err != nil {
			errorf("spec.schedule", "%v", err)
		}
	}
	errs.sort()
	return errs
}

// sharedErrors runs the experiment validator's traffic, prometheus and KPI checks on the
// drill's experiment, with the drill's positions, and words its messages for a drill.
func (d *Drill) sharedErrors() ErrorList {
	s := &d.Spec
	drain := ""
	if len(s.Drain) > 0 {
		drain = s.Drain[0]
	} else if len(s.Clusters) > 0 {
		drain = s.Clusters[0]
	}
	var out ErrorList
	e := d.Experiment(drain)
	e.Spec.KPIs = slices.Clone(s.KPIs)
	e.positions, e.nulls = d.positions, d.nulls
	v := &validator{e: e}
	switch t := &e.Spec.Traffic; {
	case t.Cloudflare != nil && t.Route53 != nil:
		v.errorf("spec.traffic.route53", "set either spec.traffic.cloudflare (a Cloudflare load balancer pool) or spec.traffic.route53 (a Route 53 weighted record set), not both")
	case t.Cloudflare != nil:
		v.cloudflare(t.Cloudflare)
	case t.Route53 != nil:
		v.route53(t.Route53)
	default:
		v.errorf("spec.traffic", "required: spec.traffic.cloudflare (a Cloudflare load balancer pool) or spec.traffic.route53 (a Route 53 weighted record set) that carries the clusters")
	}
	v.prometheus()
	if len(s.KPIs) > 0 {
		v.kpis()
	}
	for _, fe := range v.errs {
		fe.Msg = strings.ReplaceAll(fe.Msg, "is neither the canary nor a baseline", "is not in spec.clusters")
		out = append(out, fe)
	}
	if len(s.Guardrails) == 0 {
		return out
	}
	// Guardrails are KPIs at spec.guardrails[i]: check them as spec.kpis[i] of a second
	// experiment whose positions are moved there, then move the paths back.
	g := d.Experiment(drain)
	g.Spec.KPIs = g.Spec.KPIs[len(s.KPIs):]
	g.positions, g.nulls = map[string]Pos{}, map[string]bool{}
	for p, pos := range d.positions {
		if rest, ok := strings.CutPrefix(p, "spec.guardrails"); ok {
			g.positions["spec.kpis"+rest] = pos
		} else if !strings.HasPrefix(p, "spec.kpis") {
			g.positions[p] = pos
		}
	}
	for p := range d.nulls {
		if rest, ok := strings.CutPrefix(p, "spec.guardrails"); ok {
			g.nulls["spec.kpis"+rest] = true
		}
	}
	gv := &validator{e: g}
	gv.kpis()
	for _, fe := range gv.errs {
		if rest, ok := strings.CutPrefix(fe.Path, "spec.kpis"); ok {
			fe.Path = "spec.guardrails" + rest
		}
		if strings.HasSuffix(fe.Path, ".tolerance") {
			continue // reported above in a drill's own words
		}
		out = append(out, fe)
	}
	return out
}

var weekdayNames = []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}

func parseWeekday(s string) (time.Weekday, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	for i := range 7 {
		wd := time.Weekday(i)
		full := strings.ToLower(wd.String())
		if s == full || s == full[:3] {
			return wd, true
		}
	}
	return 0, false
}

// parseClock reads "09:00" (or "24:00") as the time since midnight.
func parseClock(s string) (time.Duration, bool) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(m) != 2 || len(h) == 0 || len(h) > 2 {
		return 0, false
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
		return 0, false
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, true
}

// Allowed reports whether a drill of hold may start at t: not on a blocked date, and
// inside an allowed window for its whole hold. why says what blocks it.
func (d *Drill) Allowed(t time.Time) (ok bool, why string) {
	s := &d.Spec
	loc, err := time.LoadLocation(s.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	local := t.In(loc)
	for _, day := range s.BlockedDates {
		if strings.TrimSpace(day) == local.Format(time.DateOnly) {
			return false, fmt.Sprintf("%s is a blocked date (spec.blockedDates, %s)", day, s.TimeZone)
		}
	}
	if len(s.AllowedWindows) == 0 {
		return true, ""
	}
	end := t.Add(s.Hold.Std())
	var names []string
	for _, w := range s.AllowedWindows {
		wl, err := time.LoadLocation(w.TimeZone)
		if err != nil {
			continue
		}
		lt := t.In(wl)
		start, _ := parseClock(w.Start)
		stop, _ := parseClock(w.End)
		names = append(names, fmt.Sprintf("%s %s–%s %s", strings.Join(w.Days, ","), w.Start, w.End, w.TimeZone))
		open := false
		for _, day := range w.Days {
			if wd, ok := parseWeekday(day); ok && wd == lt.Weekday() {
				open = true
			}
		}
		if !open {
			continue
		}
		midnight := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, wl)
		from, to := midnight.Add(start), midnight.Add(stop)
		if !t.Before(from) && !end.After(to) {
			return true, ""
		}
	}
	return false, fmt.Sprintf("%s is outside every allowed window for a %s hold (spec.allowedWindows: %s)", local.Format("Mon 2006-01-02 15:04 MST"), s.Hold, strings.Join(names, "; "))
}
