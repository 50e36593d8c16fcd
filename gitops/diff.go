package gitops

import (
	"fmt"
	"io"
	"strings"

	"github.com/verdict-dev/verdict/traffic"
)

// Action says how an origin's declared weight relates to the live pool.
type Action string

// Actions of a Change.
const (
	// Update: both declare a weight and they differ at 0.01 granularity.
	Update Action = "update"
	// NotInPool: the file declares a weight for an origin the pool does not have.
	NotInPool Action = "not_in_pool"
)

// Change is one origin whose declared weight disagrees with the live pool.
type Change struct {
	Origin   string   `json:"origin"`
	Key      string   `json:"key"` // the key in the file
	Action   Action   `json:"action"`
	Declared float64  `json:"declared"`
	Live     float64  `json:"live,omitempty"` // zero for NotInPool
	Pos      Position `json:"position"`
}

// Plan is the comparison of a source of truth with the live pool, over the origins the
// source covers. It is ready for a JSON view as it is.
type Plan struct {
	File       string   `json:"file"`
	Ref        string   `json:"ref"` // expression or key path
	Changes    []Change `json:"changes"`
	Unchanged  []string `json:"unchanged"`  // origins that agree, sorted
	Undeclared []string `json:"undeclared"` // live origins the source does not cover, sorted
}

// InSync reports whether the file and the pool agree on every origin the source covers.
func (p Plan) InSync() bool { return len(p.Changes) == 0 }

// Diff compares the declared weights with the live ones (the pool's Weights()), for the
// origins the source covers only; weights are equal when they round to the same 0.01.
func Diff(d *Declared, live traffic.Weights) Plan {
	p := Plan{File: d.Source.File, Ref: d.Source.Ref(), Changes: []Change{}, Unchanged: []string{}, Undeclared: []string{}}
	for _, o := range sortedKeys(d.Weights) {
		dw := d.Weights[o]
		lw, ok := live[o]
		switch {
		case !ok:
			p.Changes = append(p.Changes, Change{Origin: o, Key: d.Keys[o], Action: NotInPool, Declared: dw, Pos: d.Positions[o]})
		case hundredths(lw) != hundredths(dw):
			p.Changes = append(p.Changes, Change{Origin: o, Key: d.Keys[o], Action: Update, Declared: dw, Live: lw, Pos: d.Positions[o]})
		default:
			p.Unchanged = append(p.Unchanged, o)
		}
	}
	for _, o := range sortedKeys(live) {
		if _, ok := d.Weights[o]; !ok {
			p.Undeclared = append(p.Undeclared, o)
		}
	}
	return p
}

// Direction says which side of a Plan a rendering changes.
type Direction int

const (
	// ToFile renders what writing the live weights into the file would change
	// (verdict sync): declared -> live.
	ToFile Direction = iota
	// ToPool renders what applying the file would do to the live pool (terraform apply,
	// an Argo CD sync), the drift shown before a run: live -> declared.
	ToPool
)

// Render writes the plan the way terraform plan shows an in-place update:
//
//	~ snorlax: 0.33 -> 0.50   # infra/lb.tf:4
func (p Plan) Render(w io.Writer, dir Direction) error {
	var b strings.Builder
	subject := fmt.Sprintf("%s in %s", p.Ref, p.File)
	if p.InSync() {
		fmt.Fprintf(&b, "%s matches the live pool (%d origins).\n", subject, len(p.Unchanged))
		_, err := io.WriteString(w, b.String())
		return err
	}
	if dir == ToFile {
		fmt.Fprintf(&b, "Verdict will update %s to the live pool's weights:\n\n", subject)
	} else {
		fmt.Fprintf(&b, "%s disagrees with the live pool; applying it would change the pool:\n\n", subject)
	}
	width := 0
	for _, c := range p.Changes {
		width = max(width, len(c.Origin))
	}
	updates := 0
	for _, c := range p.Changes {
		name := c.Origin + ":" + strings.Repeat(" ", width-len(c.Origin))
		switch c.Action {
		case Update:
			updates++
			from, to := c.Declared, c.Live
			if dir == ToPool {
				from, to = to, from
			}
			fmt.Fprintf(&b, "  ~ %s %.2f -> %.2f", name, from, to)
		case NotInPool:
			fmt.Fprintf(&b, "  ! %s %.2f (declared, but the pool has no such origin)", name, c.Declared)
		}
		if c.Key != c.Origin {
			fmt.Fprintf(&b, "   # key %q, %s", c.Key, c.Pos)
		} else {
			fmt.Fprintf(&b, "   # %s", c.Pos)
		}
		b.WriteByte('\n')
	}
	if n := len(p.Unchanged); n > 0 {
		fmt.Fprintf(&b, "    # (%d unchanged: %s)\n", n, strings.Join(p.Unchanged, ", "))
	}
	fmt.Fprintf(&b, "\nPlan: %d to change, %d unchanged", updates, len(p.Unchanged))
	if n := len(p.Changes) - updates; n > 0 {
		fmt.Fprintf(&b, ", %d declared origins not in the pool", n)
	}
	b.WriteString(".\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// String renders the plan as Render(ToFile) would.
func (p Plan) String() string {
	var b strings.Builder
	_ = p.Render(&b, ToFile)
	return b.String()
}
