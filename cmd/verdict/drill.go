package main

import "github.com/spf13/cobra"

// newDrillCmds returns the switchover and drill commands (issue 17).
func newDrillCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{newSwitchoverCmd(g), newDrillCmd(g)}
}
