package experiments

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestDriveArgsRebuildTheSameSwitchover: the resume command a switchover run is given
// derives exactly the experiment stored with it, so the resume is not refused as changed.
func TestDriveArgsRebuildTheSameSwitchover(t *testing.T) {
	e := loadFleet(t, readBase(t))
	sw, err := Switchover(e, SwitchoverOptions{From: "c2", To: "c3", Steps: "10%:5m,40%,100%", Hold: Duration(7 * 60e9)})
	if err != nil {
		t.Fatal(err)
	}
	args := DriveArgs(sw, "fleet.yaml", "RUN")
	if args[0] != "switchover" || args[len(args)-1] != "RUN" {
		t.Fatalf("args %q", args)
	}
	i := slices.Index(args, "--steps")
	again, err := Switchover(e, SwitchoverOptions{From: args[slices.Index(args, "--from")+1], To: args[slices.Index(args, "--to")+1], Steps: args[i+1]})
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	a, _ := json.Marshal(sw)
	b, _ := json.Marshal(again)
	if string(a) != string(b) {
		t.Errorf("the resume command derives another experiment:\n%s\n%s", a, b)
	}
	if got := strings.Join(DriveArgs(e, "fleet.yaml", "RUN"), " "); got != "run fleet.yaml --resume RUN" {
		t.Errorf("plain experiment: %s", got)
	}
}
