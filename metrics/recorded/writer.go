package recorded

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/verdict-dev/verdict/metrics"
)

// Writer writes a recorded file: the header first, then records in any order.
type Writer struct {
	enc *json.Encoder
}

type headerJSON struct {
	Version     int                `json:"verdictReplay"`
	Interval    string             `json:"interval"`
	Start       time.Time          `json:"start"`
	Weights     map[string]float64 `json:"weights"`
	Description string             `json:"description,omitempty"`
}

// NewWriter writes h as the header line (with this package's Version, whatever h.Version
// says) and returns a Writer for the records.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if h.Interval <= 0 {
		return nil, fmt.Errorf("recorded header: interval must be positive")
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	err := enc.Encode(headerJSON{Version: Version, Interval: formatDuration(h.Interval), Start: h.Start.UTC(), Weights: h.Weights, Description: h.Description})
	if err != nil {
		return nil, err
	}
	return &Writer{enc: enc}, nil
}

// Record writes one KPI record.
func (w *Writer) Record(r Record) error {
	r.End = r.End.UTC()
	return w.enc.Encode(r)
}

// Instant writes one instant record.
func (w *Writer) Instant(in Instant) error {
	in.At = in.At.UTC()
	return w.enc.Encode(in)
}

// Data writes every interval of d, for every cluster, as records: what `verdict replay`
// reads back as the same Data (d.Kind says which values a record holds).
func (w *Writer) Data(d *metrics.Data) error {
	for _, c := range slices.Sorted(maps.Keys(d.Clusters)) {
		cd := d.Clusters[c]
		if cd == nil {
			continue
		}
		for _, iv := range cd.Intervals {
			if err := w.Record(FromInterval(d.KPI, d.Kind, c, iv)); err != nil {
				return err
			}
		}
	}
	return nil
}

// FromInterval is the record of one cluster's interval of a KPI of the given kind.
func FromInterval(kpi string, kind metrics.Kind, cluster string, iv metrics.Interval) Record {
	r := Record{End: iv.End.UTC(), Cluster: cluster, KPI: kpi}
	f := func(x float64) *float64 { return &x }
	switch kind {
	case metrics.KindRatio:
		r.Events, r.Total = f(iv.Events), f(iv.Total)
	case metrics.KindLatency:
		r.Count = f(iv.Count)
		if !math.IsNaN(iv.Sum) && !math.IsInf(iv.Sum, 0) {
			r.Sum = f(iv.Sum)
		}
		r.Buckets = map[string]float64{}
		for _, b := range iv.Buckets {
			le := strconv.FormatFloat(b.UpperBound, 'g', -1, 64)
			if math.IsInf(b.UpperBound, 1) {
				le = "+Inf"
			}
			r.Buckets[le] = b.Count
		}
	default:
		r.Value = f(iv.Value)
	}
	return r
}
