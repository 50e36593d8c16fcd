package analysis

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Action is the overall recommendation for the experiment at this moment.
type Action string

const (
	// Continue keeps the current weights and keeps watching.
	Continue Action = "continue"
	// Advance moves to the next step's weights.
	Advance Action = "advance"
	// Promote makes the canary the new baseline.
	Promote Action = "promote"
	// Rollback returns all traffic to the baseline now.
	Rollback Action = "rollback"
)

// Status is one KPI's verdict.
type Status string

const (
	// Harm: the confidence sequence lies entirely beyond the tolerance on
	// the harmful side, or the guardrail was breached.
	Harm Status = "harm"
	// NonInferior: the confidence sequence lies entirely on the good side of
	// the tolerance.
	NonInferior Status = "non-inferior"
	// Inconclusive: neither yet.
	Inconclusive Status = "inconclusive"
	// NoData: nothing to judge (no intervals, no events, or the source was
	// unreachable); never a pass.
	NoData Status = "no data"
)

// IntervalSource is what Decide needs from a KPI's live state: its
// confidence sequence at a given α. RatioSequence and GaugeSequence
// implement it.
type IntervalSource interface {
	Interval(alpha float64) Interval
}

var (
	_ IntervalSource = (*RatioSequence)(nil)
	_ IntervalSource = (*GaugeSequence)(nil)
)

// KPI is one key performance indicator as the decision sees it.
type KPI struct {
	// Name is shown to people ("error rate", "p50 latency").
	Name string
	// State is the KPI's live sequence; nil means no data.
	State IntervalSource
	// Harm is the harmful direction: Increase (errors, latency) or
	// Decrease (success rate, throughput). Either is treated as Increase.
	Harm Direction
	// Tolerance is the margin m: a relative change for relative sequences
	// (0.10 = 10%), an absolute difference otherwise. Negative is taken as 0.
	Tolerance float64
}

// Step describes where the experiment is, so the decision knows which
// actions are open.
type Step struct {
	// Alpha is the family-wise error level (default 0.05), split equally
	// over the KPIs (Bonferroni, valid for confidence sequences).
	Alpha float64
	// HoldComplete is true when the step's hold has elapsed.
	HoldComplete bool
	// MinHoldComplete is true when the step's minimum hold has elapsed: from then on the
	// step advances (or, the final step, promotes) as soon as every KPI is non-inferior
	// and the traffic shares match, without waiting for the rest of its hold.
	MinHoldComplete bool
	// Final is true on the last step (after which the canary is promoted).
	Final bool
	// MaxDurationReached is true when the experiment's time is up.
	MaxDurationReached bool
	// OnInconclusive is the action at MaxDuration when the KPIs are not
	// all non-inferior (default Rollback).
	OnInconclusive Action
	// Share is the traffic-share check, when one is run.
	Share *ShareResult
}

// KPIVerdict is one KPI's status with the numbers behind it.
type KPIVerdict struct {
	// Name is the KPI's name.
	Name string
	// Status is harm, non-inferior, inconclusive or no data.
	Status Status
	// Interval is the confidence sequence at the KPI's share of α.
	Interval Interval
	// Tolerance and Harm repeat the KPI's margin and harmful direction.
	Tolerance float64
	// Harm is the harmful direction.
	Harm Direction
	// Reason explains the status in one sentence.
	Reason string
}

// Decision is the outcome of Decide: an action, why, and the per-KPI numbers.
type Decision struct {
	// Action is what to do now.
	Action Action
	// Reason is a sentence a person can read.
	Reason string
	// KPIs holds each KPI's verdict, in input order.
	KPIs []KPIVerdict
	// AlphaPerKPI is the error level each KPI was judged at.
	AlphaPerKPI float64
	// ShareMismatch is true when the traffic-share check failed.
	ShareMismatch bool
}

// Judge classifies one KPI's interval against its tolerance (statistics.md
// §7). It is exported so reports can show the same status the engine acted
// on.
func Judge(name string, iv Interval, harm Direction, tol float64) KPIVerdict {
	if !(tol >= 0) || math.IsInf(tol, 0) {
		tol = 0
	}
	if harm != Decrease {
		harm = Increase
	}
	v := KPIVerdict{Name: name, Interval: iv, Tolerance: tol, Harm: harm}
	unit := func(x float64) string {
		if iv.Relative {
			return fmt.Sprintf("%+.1f%%", 100*x)
		}
		return fmt.Sprintf("%+.4g", x)
	}
	csText := fmt.Sprintf("%s (anytime-valid %s%% bounds %s to %s)", unit(iv.Estimate), confText(iv.Alpha), unit(iv.Lower), unit(iv.Upper))
	if iv.Dispersion > 1.5 {
		csText += fmt.Sprintf(", counts %.1f× noisier than Poisson", iv.Dispersion)
	}
	if iv.PreAdjusted {
		csText += ", relative to the pre-period"
	}
	switch {
	case iv.GuardrailBreached:
		v.Status = Harm
		v.Reason = fmt.Sprintf("%s breached its absolute guardrail for %d consecutive intervals (latest %.4g)", name, iv.GuardrailStreak, iv.CanaryValue)
	case iv.Informative == 0:
		v.Status = NoData
		v.Reason = fmt.Sprintf("%s has no data yet (%d intervals, none usable)", name, iv.Intervals)
	case !iv.Ready:
		v.Status = Inconclusive
		v.Reason = fmt.Sprintf("%s is still collecting: %d usable intervals so far", name, iv.Informative)
	case harm == Increase && iv.Lower > tol:
		v.Status = Harm
		v.Reason = fmt.Sprintf("%s is higher on the canary: %s, beyond the %s tolerance", name, csText, unit(tol))
	case harm == Decrease && iv.Upper < -tol:
		v.Status = Harm
		v.Reason = fmt.Sprintf("%s is lower on the canary: %s, beyond the %s tolerance", name, csText, unit(-tol))
	case harm == Increase && iv.Upper < tol:
		v.Status = NonInferior
		v.Reason = fmt.Sprintf("%s is within tolerance: %s, below %s", name, csText, unit(tol))
	case harm == Decrease && iv.Lower > -tol:
		v.Status = NonInferior
		v.Reason = fmt.Sprintf("%s is within tolerance: %s, above %s", name, csText, unit(-tol))
	default:
		v.Status = Inconclusive
		v.Reason = fmt.Sprintf("%s is inconclusive: %s straddles the %s tolerance", name, csText, unit(tol))
	}
	return v
}

// Decide turns the KPIs' live states into the recommendation of
// statistics.md §7: roll back as soon as any KPI shows harm (or breaches its
// guardrail); at the end of a step's hold advance if nothing is harmful and
// every KPI has data; after the final step promote only when every KPI is
// non-inferior and the traffic shares match; at MaxDuration act on
// OnInconclusive. Each KPI is judged at α/K. No data is never a pass.
func Decide(kpis []KPI, step Step) Decision {
	alpha := validAlpha(step.Alpha)
	onInc := step.OnInconclusive
	if onInc == "" {
		onInc = Rollback
	}
	k := len(kpis)
	d := Decision{AlphaPerKPI: alpha}
	if k > 0 {
		d.AlphaPerKPI = alpha / float64(k)
	}
	var harmful, missing, pending []string
	for _, kpi := range kpis {
		var v KPIVerdict
		if kpi.State == nil {
			v = Judge(kpi.Name, Interval{Alpha: d.AlphaPerKPI}, kpi.Harm, kpi.Tolerance)
		} else {
			v = Judge(kpi.Name, kpi.State.Interval(d.AlphaPerKPI), kpi.Harm, kpi.Tolerance)
		}
		d.KPIs = append(d.KPIs, v)
		switch v.Status {
		case Harm:
			harmful = append(harmful, v.Reason)
		case NoData:
			missing = append(missing, kpi.Name)
		case Inconclusive:
			pending = append(pending, kpi.Name)
		}
	}
	d.ShareMismatch = step.Share != nil && step.Share.Mismatch
	// A promotion rests on the shares having been checked at the final weights, not on the
	// check not having found anything yet: a pool that ignores the weights must not pass
	// because each step ended before the check could see it.
	unchecked := step.Final && step.Share != nil && !step.Share.Mismatch && !step.Share.Checked
	// shareOpen is the share check when it stands in the way of a promotion, else nil.
	var shareOpen *ShareResult
	if d.ShareMismatch || unchecked {
		shareOpen = step.Share
	}
	switch {
	case len(harmful) > 0:
		d.Action = Rollback
		d.Reason = "Roll back: " + strings.Join(harmful, "; ") + "."
	case k == 0:
		d.Action, d.Reason = Continue, "Continue: no KPIs are configured, so nothing can pass."
		if step.MaxDurationReached {
			d.Action, d.Reason = onInc, fmt.Sprintf("%s: the maximum duration was reached with no KPIs to judge.", actionWord(onInc))
		}
	case step.MaxDurationReached && (len(missing) > 0 || len(pending) > 0 || shareOpen != nil):
		d.Action = onInc
		d.Reason = fmt.Sprintf("%s: the maximum duration was reached and %s.", actionWord(onInc), openIssues(missing, pending, shareOpen))
	case len(missing) > 0:
		d.Action = Continue
		d.Reason = fmt.Sprintf("Continue: %s no data; no verdict without data.", verbList(missing, "has", "have"))
	case !step.HoldComplete && !step.MaxDurationReached && step.MinHoldComplete && len(pending) == 0 && shareOpen == nil:
		d.Action = Advance
		d.Reason = "Advance early: every KPI is already within its tolerance and the step's minimum hold is over."
		if step.Final {
			d.Action = Promote
			d.Reason = "Promote early: every KPI is within its tolerance and the final step's minimum hold is over."
		}
	case !step.HoldComplete && !step.MaxDurationReached:
		d.Action = Continue
		d.Reason = "Continue: no KPI shows harm; the step's hold is not over."
		if len(pending) > 0 {
			d.Reason = fmt.Sprintf("Continue: no KPI shows harm; %s still inconclusive and the step's hold is not over.", verbList(pending, "is", "are"))
		}
	case !step.Final:
		if d.ShareMismatch {
			d.Action = Continue
			d.Reason = fmt.Sprintf("Continue: no KPI shows harm, but %s, so the comparison may be biased.", step.Share.Reason)
			break
		}
		d.Action = Advance
		d.Reason = "Advance: the hold is over and no KPI shows harm."
		if len(pending) > 0 {
			d.Reason = fmt.Sprintf("Advance: the hold is over and no KPI shows harm (%s still inconclusive).", verbList(pending, "is", "are"))
		}
	case len(pending) == 0 && shareOpen == nil:
		d.Action = Promote
		d.Reason = "Promote: every KPI is within its tolerance and the traffic shares match the weights."
		if step.Share == nil {
			d.Reason = "Promote: every KPI is within its tolerance."
		}
	case len(pending) == 0 && !d.ShareMismatch:
		d.Action = Continue
		d.Reason = fmt.Sprintf("Continue: every KPI is within its tolerance, but %s.", openIssues(nil, nil, shareOpen))
	default:
		d.Action = Continue
		d.Reason = fmt.Sprintf("Continue: the final step needs every KPI non-inferior, but %s.", openIssues(nil, pending, shareOpen))
	}
	return d
}

func actionWord(a Action) string {
	switch a {
	case Rollback:
		return "Roll back"
	case Promote:
		return "Promote"
	case Advance:
		return "Advance"
	}
	return "Continue"
}

func verbList(names []string, one, many string) string {
	if len(names) == 1 {
		return names[0] + " " + one
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1] + " " + many
}

// openIssues says what keeps a run from promoting: KPIs without data, KPIs not yet proven,
// and the share check when it stands in the way (nil when it does not).
func openIssues(missing, pending []string, share *ShareResult) string {
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, verbList(missing, "has", "have")+" no data")
	}
	if len(pending) > 0 {
		parts = append(parts, verbList(pending, "is", "are")+" still inconclusive")
	}
	switch {
	case share == nil:
	case share.Mismatch:
		parts = append(parts, share.Reason)
	default:
		parts = append(parts, share.uncheckedReason())
	}
	return strings.Join(parts, "; ")
}

// confText prints a confidence level the way people write it: 95, 98.3, 99.5.
func confText(alpha float64) string {
	return strconv.FormatFloat(math.Round(1000*(1-alpha))/10, 'f', -1, 64)
}

// uncheckedReason says why a share check that found nothing is no evidence yet.
func (s *ShareResult) uncheckedReason() string {
	if s.Intervals == 0 {
		return "the traffic shares have not been checked at the current weights (no interval had request counts for every cluster with known weights)"
	}
	n := fmt.Sprintf("%d intervals", s.Intervals)
	if s.Intervals == 1 {
		n = "1 interval"
	}
	return "the traffic shares are not yet checked at the current weights (" + n + " so far, too few to find a mismatch)"
}
