package gov

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/engine"
)

// putNode records a node in NodesInfoMap, as the join endpoint does.
func (f *fixture) putNode(t *testing.T, id string, info NodeInfo) {
	t.Helper()
	tx := f.eng.Begin()
	tx.Put(NodesInfoMap, id, mustJSON(info))
	if _, err := f.eng.Commit(context.Background(), tx, engine.CommitOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestNodeActions: trust_node and retire_node move a node through its
// states and keep the rest of its record; moves that do not apply fail
// the proposal.
func TestNodeActions(t *testing.T) {
	f := newFixture(t, 1)
	m := f.members[0]
	id := func(c string) string { return strings.Repeat(c, 64) }
	f.putNode(t, id("a"), NodeInfo{Status: NodePending, RaftID: 2, Address: "127.0.0.1:9", Measurement: "ab"})
	f.putNode(t, id("b"), NodeInfo{Status: NodeTrusted, RaftID: 3})
	f.putNode(t, id("c"), NodeInfo{Status: NodeRetired, RaftID: 4})
	tests := []struct {
		action, node string
		want         string // status after, "" if the proposal fails
	}{
		{"retire_node", id("b"), NodeRetiring},
		{"trust_node", id("a"), NodeTrusted},
		{"trust_node", id("a"), ""}, // already Trusted
		{"trust_node", id("d"), ""}, // unknown
		{"retire_node", id("c"), ""},
		{"retire_node", id("a"), NodeRetiring},
	}
	for i, tt := range tests {
		args, _ := json.Marshal(map[string]string{"node_id": tt.node})
		p, err := f.propose(t, m, Action{Name: tt.action, Args: args})
		if err != nil {
			t.Fatalf("%d: propose: %v", i, err)
		}
		p, err = f.vote(t, m, p.ProposalID, BallotAccept)
		if err != nil {
			t.Fatalf("%d: vote: %v", i, err)
		}
		wantState := StateAccepted
		if tt.want == "" {
			wantState = StateFailed
		}
		if p.State != wantState {
			t.Errorf("%d: %s %s…: proposal %s (%s), want %s", i, tt.action, tt.node[:4], p.State, p.FailureReason, wantState)
		}
		if tt.want != "" {
			info, _ := NodeInfoOf(f.eng.Begin(), tt.node)
			if info.Status != tt.want {
				t.Errorf("%d: status %s, want %s", i, info.Status, tt.want)
			}
		}
	}
	info, _ := NodeInfoOf(f.eng.Begin(), id("a"))
	if info.RaftID != 2 || info.Address != "127.0.0.1:9" || info.Measurement != "ab" {
		t.Errorf("the actions lost the node's record: %+v", info)
	}
	pending := id("e")
	f.putNode(t, pending, NodeInfo{Status: NodePending, RaftID: 5})
	args, _ := json.Marshal(map[string]string{"node_id": pending})
	p, _ := f.propose(t, m, Action{Name: "retire_node", Args: args})
	if p, _ = f.vote(t, m, p.ProposalID, BallotAccept); p.State != StateAccepted {
		t.Fatalf("retire a Pending node: %s", p.State)
	}
	if info, _ := NodeInfoOf(f.eng.Begin(), pending); info.Status != NodeRetired {
		t.Errorf("a retired Pending node is %s, want Retired", info.Status)
	}
}
