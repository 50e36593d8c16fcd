// Package report turns an experiment run (from the store) or any past window (from
// Prometheus) into the evidence people read afterwards: the verdict and why, the timeline,
// per-KPI charts of canary against each baseline, the effect with its confidence sequence
// over time, the fixed-horizon tests with Kayenta's classification beside them, the
// traffic-share check and the pre-period calibration.
//
// The model (Report) is built once and rendered three ways: JSON (a stable schema,
// docs/report-json.md), Markdown and a self-contained HTML page with inline SVG charts.
// Building is pure computation over stored observations, so a report of a finished run is
// reproducible byte for byte.
package report

import (
	"fmt"
	"time"
)

// SchemaVersion is the version of the JSON report. It changes only when a field changes
// meaning or disappears; new fields may be added within a version.
const SchemaVersion = 1

// Kinds of report.
const (
	// KindRun is a report of a recorded run, built from the store.
	KindRun = "run"
	// KindAnalysis is a report of an arbitrary window read from Prometheus (verdict analyze).
	KindAnalysis = "analysis"
)

// KPI statuses beyond analysis.Status: throughput KPIs only feed the share check.
const (
	// StatusNotJudged marks a KPI shown for context but not judged (throughput).
	StatusNotJudged = "not judged"
)

// Report is everything a post-hoc report shows. Its JSON form is documented in
// docs/report-json.md and kept stable; renderers read nothing else, so the three formats
// cannot disagree.
type Report struct {
	// SchemaVersion is SchemaVersion, so a consumer can refuse what it does not know.
	SchemaVersion int `json:"schemaVersion"`
	// Kind is KindRun or KindAnalysis.
	Kind string `json:"kind"`
	// Verdict is the run's verdict (promoted, rolled_back, aborted, inconclusive, failed,
	// check_failed, or running when it has not ended) or, for an analysis, the overall
	// status of the KPIs (harm, non-inferior, inconclusive, no data).
	Verdict string `json:"verdict"`
	// Reason is the sentence saying why.
	Reason string `json:"reason"`
	// Experiment says what was tried and, for a run, how it went.
	Experiment Experiment `json:"experiment"`
	// Window is the analysed range of intervals (run phase).
	Window Window `json:"window"`
	// Clusters names the canary and its baselines.
	Clusters Clusters `json:"clusters"`
	// Alpha is the family-wise error level; each judged KPI gets Alpha/len(judged).
	Alpha float64 `json:"alpha"`
	// KPIs holds one entry per judged quantity, in the experiment's order.
	KPIs []KPI `json:"kpis"`
	// Steps are the ramp's steps as they happened (empty for an analysis).
	Steps []Step `json:"steps"`
	// Weights are the experiment clusters' shares of the experiment's traffic over time.
	Weights []WeightPoint `json:"weights"`
	// Timeline holds the run's events in order (state changes, weight changes, manual
	// actions, notifications, faults, preconditions), decisions excluded.
	Timeline []Entry `json:"timeline"`
	// Decisions are every decision the engine recorded, in order.
	Decisions []Decision `json:"decisions"`
	// Traffic is the traffic-share check.
	Traffic Traffic `json:"traffic"`
	// Preconditions summarises the precondition checks of the run.
	Preconditions []Precondition `json:"preconditions"`
	// PrePeriod is the A/A calibration window before any weight change, when there was one.
	PrePeriod *PrePeriod `json:"prePeriod,omitempty"`
	// Notes are caveats a reader should know (missing data, skipped intervals).
	Notes []string `json:"notes"`
	// SourceOfTruth is what the run's write-back into the declared source of truth did
	// (spec.traffic.sourceOfTruth): the file, branch, commit and pull request, or the
	// error. Absent when nothing was to be written back.
	SourceOfTruth *SourceSync `json:"sourceOfTruth,omitempty"`
}

// SourceSync is the write-back of a run's final weights into a Terraform or values file.
type SourceSync struct {
	// Source is the file and the expression or key path.
	Source string `json:"source"`
	// Ending is what changed the intended weights, e.g. "promote (keep)".
	Ending string `json:"ending"`
	// Changes is how many weights the write-back changed in the file.
	Changes     int    `json:"changes"`
	Written     bool   `json:"written,omitempty"`
	Branch      string `json:"branch,omitempty"`
	Commit      string `json:"commit,omitempty"`
	Base        string `json:"base,omitempty"`
	PullRequest string `json:"pullRequest,omitempty"`
	// UpToDate: the file already held the weights; nothing was committed.
	UpToDate bool `json:"upToDate,omitempty"`
	// Error is why the write-back failed; the verdict stands.
	Error string `json:"error,omitempty"`
	// Summary is the sentence the Markdown and HTML reports show.
	Summary string `json:"summary"`
}

// Experiment says what was tried and, for a run, how it went.
type Experiment struct {
	// Name is the experiment's name.
	Name string `json:"name"`
	// Description is the experiment's description.
	Description string `json:"description,omitempty"`
	// Variant is what differs on the canary, as recorded in the spec.
	Variant map[string]string `json:"variant,omitempty"`
	// RunID identifies the run (empty for an analysis).
	RunID string `json:"runID,omitempty"`
	// State is the run's state machine state.
	State string `json:"state,omitempty"`
	// EndedBy is who or what ended the run.
	EndedBy string `json:"endedBy,omitempty"`
	// Started is when the run was created.
	Started time.Time `json:"started,omitzero"`
	// Ended is when the run ended (zero while it runs).
	Ended time.Time `json:"ended,omitzero"`
	// Duration is Ended − Started in seconds (0 while running).
	Duration float64 `json:"durationSeconds"`
	// Prometheus is the address the data came from (credentials redacted), for analyses.
	Prometheus string `json:"prometheus,omitempty"`
}

// Window is the analysed time range: intervals (from+k·step−step, from+k·step].
type Window struct {
	// From is the start of the first interval.
	From time.Time `json:"from"`
	// To is the end of the last interval.
	To time.Time `json:"to"`
	// Step is the interval length as a Prometheus duration ("1m").
	Step string `json:"step"`
}

// Clusters names the canary and the baselines it is compared with.
type Clusters struct {
	// Canary is the cluster running the variant.
	Canary string `json:"canary"`
	// Baselines are the clusters it is compared with.
	Baselines []string `json:"baselines"`
}

// KPI is the evidence about one judged quantity. A latency KPI of the experiment yields up
// to two of them, as the engine judges them: its slow share and its mean.
type KPI struct {
	// Name is the judged name, as in the engine's decisions ("latency (mean)").
	Name string `json:"name"`
	// Source is the experiment KPI it comes from ("latency").
	Source string `json:"source"`
	// Type is ratio, latency or gauge (the experiment KPI type) or throughput.
	Type string `json:"type"`
	// Measure says what the per-interval values are: rate (events/total), mean (Δsum/Δcount)
	// or value.
	Measure string `json:"measure"`
	// Harm is the harmful direction: increase or decrease.
	Harm string `json:"harm"`
	// Tolerance is the margin m of statistics.md §7 (relative).
	Tolerance float64 `json:"tolerance"`
	// Guardrail is the absolute limit on the canary's own value, if any.
	Guardrail *Guardrail `json:"guardrail,omitempty"`
	// Canary summarises the canary's per-interval values in the run phase.
	Canary Summary `json:"canary"`
	// Baseline summarises the pooled baselines (summed counts, or the mean of gauges).
	Baseline Summary `json:"baseline"`
	// Baselines summarises each baseline cluster on its own.
	Baselines map[string]Summary `json:"baselines"`
	// Effect is the final anytime-valid effect.
	Effect Effect `json:"effect"`
	// Tests are the fixed-horizon tests, Holm-adjusted across KPIs.
	Tests []Test `json:"tests"`
	// Kayenta is Kayenta's classification, for teams used to it.
	Kayenta *Kayenta `json:"kayenta,omitempty"`
	// Status is harm, non-inferior, inconclusive, no data or not judged.
	Status string `json:"status"`
	// StatusReason is the sentence behind Status.
	StatusReason string `json:"statusReason"`
	// StatusAfter is the number of live intervals after which the KPI reached Status and
	// kept it to the end (harm and non-inferior only; 0 otherwise); LiveIntervals is the
	// number of live intervals in all.
	StatusAfter int `json:"statusAfter,omitempty"`
	// LiveIntervals counts the live intervals the evidence saw (any KPI with data).
	LiveIntervals int `json:"liveIntervals,omitempty"`
	// Series holds the per-interval values for the charts, run phase and pre-period.
	Series []Point `json:"series"`
	// Sequence is the confidence sequence after each run interval.
	Sequence []SeqPoint `json:"sequence"`
	// Pre is the KPI's pre-period calibration, when there was a pre-period.
	Pre *PreKPI `json:"pre,omitempty"`
	// Noise is the noise model the engine learned for this KPI from the history before
	// the variant: why the verdict took the time it took. Judged KPIs only.
	Noise *Noise `json:"noise,omitempty"`
}

// Noise is one judged KPI's noise model as the engine learned it from the history window
// (engine.Evidence.Noise): cluster-level noise that does not shrink with traffic, how long
// it persists, and the canary's offset against the baselines before the variant. Figures
// are on the scale the KPI is judged on: log ratios (≈ relative changes) when Relative.
// Without a usable model only HistoryIntervals and Fallback are set.
type Noise struct {
	// HistoryIntervals counts the history intervals the model was learned from (those that
	// carried information), or, with Fallback, the history intervals there were.
	HistoryIntervals int `json:"historyIntervals"`
	// Relative is true when the figures are log ratios (read 0.12 as about 12%).
	Relative bool `json:"relative"`
	// ClusterSD is the per-interval standard deviation of the comparison beyond sampling
	// noise (√τ²).
	ClusterSD *float64 `json:"clusterSD,omitempty"`
	// LongRunSD is the per-interval standard deviation of long sums of it, correlation
	// included: the figure the live sequences use (≥ ClusterSD).
	LongRunSD *float64 `json:"longRunSD,omitempty"`
	// Correlation is the lag-1 autocorrelation of the cluster-level noise.
	Correlation *float64 `json:"correlation,omitempty"`
	// CorrelatedIntervals is LongRunSD²/ClusterSD²: over how many intervals the noise
	// persists (1: independent intervals).
	CorrelatedIntervals *float64 `json:"correlatedIntervals,omitempty"`
	// Dispersion is how much noisier than their counts explain the history's intervals were
	// ((sampling + long-run variance) / sampling; 1 = Poisson-like).
	Dispersion *float64 `json:"dispersion,omitempty"`
	// Offset is the canary's pre-existing effect against the baselines, subtracted from the
	// run's effect unless OffsetIgnored.
	Offset *float64 `json:"offset,omitempty"`
	// OffsetSE is the standard error of Offset, correlation included.
	OffsetSE *float64 `json:"offsetSE,omitempty"`
	// OffsetIgnored is true when the offset is shown but not subtracted: the experiment did
	// not declare when the variant arrived (spec.canary.apply), so the history may already
	// contain it.
	OffsetIgnored bool `json:"offsetIgnored,omitempty"`
	// EventsPerInterval is the mean number of events per history interval, canary and
	// baselines together (counts KPIs).
	EventsPerInterval *float64 `json:"eventsPerInterval,omitempty"`
	// HeavyTail names the side ("upper", "lower" or "both") on which the comparison's
	// noise had a heavier tail than a Gaussian's over a few intervals (bursts): the live
	// bound on that side is widened by a Bernstein term. Empty for Gaussian-like noise.
	HeavyTail string `json:"heavyTail,omitempty"`
	// Fallback says why no noise model is used, when none is: the sequences then estimate
	// the noise from the run itself, after analysis.minIntervals.
	Fallback string `json:"fallback,omitempty"`
}

// Guardrail is an absolute limit on the canary.
type Guardrail struct {
	// Limit is the value; Below means falling under it is the breach.
	Limit float64 `json:"limit"`
	// Below makes falling under Limit the breach.
	Below bool `json:"below,omitempty"`
	// For is how many consecutive intervals must breach.
	For int `json:"for"`
}

// Summary describes one side's per-interval values. Statistics that are not defined (sd of
// one value, counts of a gauge) are omitted.
type Summary struct {
	// N counts the intervals with a value.
	N int `json:"n"`
	// Mean is the mean of the per-interval values.
	Mean *float64 `json:"mean,omitempty"`
	// SD is their sample standard deviation (n ≥ 2).
	SD *float64 `json:"sd,omitempty"`
	// P50 is the median (R type 7).
	P50 *float64 `json:"p50,omitempty"`
	// P95 is the 95th percentile.
	P95 *float64 `json:"p95,omitempty"`
	// P99 is the 99th percentile.
	P99 *float64 `json:"p99,omitempty"`
	// Events and Total are summed counts (ratio and latency KPIs); Rate is Events/Total,
	// the pooled rate, which is what the rate test compares.
	Events *float64 `json:"events,omitempty"`
	// Total is the summed request count.
	Total *float64 `json:"total,omitempty"`
	// Rate is Events/Total.
	Rate *float64 `json:"rate,omitempty"`
}

// Effect is the canary's effect relative to the baselines at the end: the anytime-valid
// confidence sequence the engine decides on, which stays valid although the run stopped
// when the data said so (a fixed-horizon interval does not).
type Effect struct {
	// Estimate is the point estimate.
	Estimate *float64 `json:"estimate"`
	// CILow and CIHigh are null when unbounded on that side.
	CILow *float64 `json:"ciLow"`
	// CIHigh is the upper bound, null when unbounded.
	CIHigh *float64 `json:"ciHigh"`
	// Relative is true when the numbers are relative changes (0.12 = canary 12% higher).
	Relative bool `json:"relative"`
	// Alpha is each end's one-sided error level ([ciLow, ciHigh] covers at 1 − 2·alpha).
	Alpha float64 `json:"alpha"`
	// PreAdjusted is true when the pre-period's difference was subtracted.
	PreAdjusted bool `json:"preAdjusted"`
	// Dispersion is how much noisier than Poisson the counts were (ratio KPIs).
	Dispersion float64 `json:"dispersion"`
	// Intervals counts the intervals behind the effect.
	Intervals int `json:"intervals"`
}

// Test methods.
const (
	MethodWelch        = "welch-t"
	MethodMannWhitney  = "mann-whitney"
	MethodBinomialRate = "binomial-rate"
)

// Test is one fixed-horizon test of canary against pooled baselines, two-sided at the end
// of the window, with its p-value Holm-adjusted across KPIs for the same method.
type Test struct {
	// Method is MethodWelch, MethodMannWhitney or MethodBinomialRate.
	Method string `json:"method"`
	// Statistic is Welch's t, the Mann-Whitney U of the canary, or the canary's event count
	// for the binomial rate test; null when infinite (a constant sample).
	Statistic *float64 `json:"statistic"`
	// PValue is the two-sided p-value.
	PValue float64 `json:"pValue"`
	// PAdjusted is PValue Holm-adjusted across the report's KPIs for this method.
	PAdjusted float64 `json:"pAdjusted"`
	// DF is Welch's degrees of freedom.
	DF *float64 `json:"df,omitempty"`
	// Estimate is the method's effect: difference of means (Welch), Hodges–Lehmann shift
	// (Mann-Whitney), rate ratio (binomial-rate); CILow/CIHigh its 95% interval when it has one.
	Estimate *float64 `json:"estimate,omitempty"`
	// CILow is the lower end of Estimate's 95% interval.
	CILow *float64 `json:"ciLow,omitempty"`
	// CIHigh is the upper end of Estimate's 95% interval.
	CIHigh *float64 `json:"ciHigh,omitempty"`
	// Error says why the test could not be run (too few values); the p-value is then 1.
	Error string `json:"error,omitempty"`
}

// Kayenta is Kayenta's Mann-Whitney classification of the same per-interval values, for
// teams used to reading it.
type Kayenta struct {
	// Classification is Pass, High, Low or Nodata.
	Classification string `json:"classification"`
	// Deviation is the mean ratio canary/baseline, when defined.
	Deviation *float64 `json:"deviation,omitempty"`
	// Reason says why, in Kayenta's terms.
	Reason string `json:"reason,omitempty"`
}

// Point is one interval's values: the canary's, the pooled baselines' and each baseline's.
// A nil value means no data for that cluster in that interval.
type Point struct {
	// End is the interval's end.
	End time.Time `json:"end"`
	// Step is the ramp step the interval belongs to (0 in the pre-period).
	Step int `json:"step"`
	// Phase is "pre" or "run".
	Phase string `json:"phase"`
	// Canary is the canary's value.
	Canary *float64 `json:"canary"`
	// Baseline is the pooled baselines' value.
	Baseline *float64 `json:"baseline"`
	// Baselines are each baseline's value.
	Baselines map[string]*float64 `json:"baselines"`
}

// SeqPoint is the confidence sequence after one run interval.
type SeqPoint struct {
	// End is the interval's end.
	End time.Time `json:"end"`
	// Estimate is the point estimate.
	Estimate float64 `json:"estimate"`
	// Lower is the lower bound, null when unbounded.
	Lower *float64 `json:"lower"`
	// Upper is the upper bound, null when unbounded.
	Upper *float64 `json:"upper"`
	// Ready is false until enough intervals carried information for a verdict.
	Ready bool `json:"ready"`
}

// PreKPI is a KPI's calibration: how canary and baselines compared before any change.
type PreKPI struct {
	// Intervals counts the pre-period intervals with data.
	Intervals int `json:"intervals"`
	// Canary is the canary's pre-period value (pooled rate, or mean).
	Canary *float64 `json:"canary"`
	// Baseline is the pooled baselines' pre-period value.
	Baseline *float64 `json:"baseline"`
	// Ratio is canary/baseline in the pre-period; the run's effect is judged relative to it.
	Ratio *float64 `json:"ratio"`
}

// Step is one ramp step as it happened.
type Step struct {
	// Step is the step number, 1-based.
	Step int `json:"step"`
	// Weight is the canary's planned share of the experiment's traffic.
	Weight float64 `json:"weight"`
	// Hold is the step's planned minimum duration.
	Hold string `json:"hold"`
	// Start is when the step's weights were confirmed.
	Start time.Time `json:"start"`
	// End is when the next step, the rollback or the promotion began.
	End time.Time `json:"end,omitzero"`
	// Intervals counts the analysed intervals of the step.
	Intervals int `json:"intervals"`
}

// WeightPoint is the clusters' shares of the experiment's traffic from At on.
type WeightPoint struct {
	// At is when these shares took effect.
	At time.Time `json:"at"`
	// Why names the change: before the experiment, step N, rollback, promote.
	Why string `json:"why"`
	// Shares maps each cluster to its share of the experiment's traffic.
	Shares map[string]float64 `json:"shares"`
}

// Entry is one event of the run.
type Entry struct {
	// At is when it happened.
	At time.Time `json:"at"`
	// Type is the engine event type (engine.Event*).
	Type string `json:"type"`
	// Message is the event's sentence.
	Message string `json:"message"`
}

// Decision is one recorded decision of the engine.
type Decision struct {
	// At is when the decision was taken.
	At time.Time `json:"at"`
	// Step is the step it was taken in.
	Step int `json:"step"`
	// Action is continue, advance, promote or rollback.
	Action string `json:"action"`
	// Reason is the decision's sentence.
	Reason string `json:"reason"`
}

// Traffic is the traffic-share check: were the weights honoured?
type Traffic struct {
	// Checked is false when no interval had request counts for every cluster.
	Checked bool `json:"checked"`
	// Mismatch is true when the shares did not match the weights.
	Mismatch bool `json:"mismatch"`
	// LogBayesFactor is the evidence for a mismatch (≥ log(1/α) flags).
	LogBayesFactor float64 `json:"logBayesFactor"`
	// Reason says why, or why the check was not run.
	Reason string `json:"reason,omitempty"`
	// Tolerance is the relative share difference that counts as a mismatch
	// (spec.analysis.shareTolerance); 0 means any difference the test can see.
	Tolerance float64 `json:"tolerance,omitempty"`
	// Steps compares, per step, each cluster's configured share with its observed share of
	// requests.
	Steps []ShareStep `json:"steps"`
}

// ShareStep is one step's configured and observed shares.
type ShareStep struct {
	// Step is the step number.
	Step int `json:"step"`
	// Expected is each cluster's configured share.
	Expected map[string]float64 `json:"expected"`
	// Observed is each cluster's observed share of the requests.
	Observed map[string]float64 `json:"observed"`
	// Requests is the step's request count over all clusters.
	Requests float64 `json:"requests"`
}

// Precondition summarises one precondition's checks during the run.
type Precondition struct {
	// Name is the precondition's name.
	Name string `json:"name"`
	// Expect is its expectation, e.g. "== 0".
	Expect string `json:"expect"`
	// Checks counts the evaluations during the run.
	Checks int `json:"checks"`
	// Failures counts the checks that did not hold.
	Failures int `json:"failures"`
	// Last is the last value seen (null: no data).
	Last *float64 `json:"last"`
}

// PrePeriod is the calibration window before any weight change.
type PrePeriod struct {
	// From is the start of the first pre-period interval.
	From time.Time `json:"from"`
	// To is the end of the last.
	To time.Time `json:"to"`
	// Intervals counts the pre-period intervals.
	Intervals int `json:"intervals"`
}

// sourceSyncText is the write-back as one sentence, for the Markdown and HTML reports.
func sourceSyncText(runID string, s *SourceSync) string {
	if s.Error != "" {
		return fmt.Sprintf("The run ended with %s, but writing its weights back into %s failed: %s. The verdict stands; run `verdict sync %s` to retry.", s.Ending, s.Source, s.Error, runID)
	}
	return "After " + s.Ending + ": " + s.Summary + "."
}
