package experiments

import "strings"

// DriveArgs are the verdict arguments that drive an unfinished run of e again, e being the
// experiment stored with the run and file the file it came from. Drills and switchovers are
// derived from their files by their own commands, so `run FILE --resume` would build a
// different experiment and be refused as changed: each is resumed by the command that made
// it, with the options that make the same experiment again.
func DriveArgs(e *Experiment, file, runID string) []string {
	switch {
	case e.Kind == KindDrill:
		args := []string{"drill", file}
		if d := e.Metadata.Labels[DrillDrainLabel]; d != "" {
			args = append(args, "--drain", d)
		}
		return append(args, "--resume", runID)
	case e.Spec.Canary.Variant[SwitchoverVariant] != "" && len(e.Spec.Baselines) == 1:
		steps := make([]string, 0, len(e.Spec.Traffic.Steps))
		for _, st := range e.Spec.Traffic.Steps {
			s := st.Weight.String()
			if st.Hold > 0 {
				s += ":" + st.Hold.String()
			}
			steps = append(steps, s)
		}
		return []string{"switchover", file, "--from", e.Spec.Baselines[0], "--to", e.Spec.Canary.Cluster,
			"--steps", strings.Join(steps, ","), "--resume", runID}
	}
	return []string{"run", file, "--resume", runID}
}
