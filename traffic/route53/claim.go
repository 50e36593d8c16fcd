package route53

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/verdict-dev/verdict/traffic"
)

// ClaimTTL is the TTL of the claim TXT record; nothing resolves it but people with dig.
const ClaimTTL = 300

// ClaimName is the TXT record that holds the claim of the record set ref names:
// "_verdict." followed by the record name, for every record type of that name, since a
// name's A and AAAA sets are steered together.
func ClaimName(ref traffic.PoolRef) (string, error) {
	_, name, _, err := ParseRef(ref)
	if err != nil {
		return "", err
	}
	return "_verdict." + name, nil
}

// claimRecord reads the claim TXT record, nil when there is none.
func (s *Steerer) claimRecord(ctx context.Context, t target) (*types.ResourceRecordSet, error) {
	name := "_verdict." + t.name
	resp, err := s.client.ListResourceRecordSets(ctx, &r53.ListResourceRecordSetsInput{
		HostedZoneId:    aws.String(t.zone),
		StartRecordName: aws.String(name),
		StartRecordType: types.RRTypeTxt,
		MaxItems:        aws.Int32(1),
	})
	if err != nil {
		return nil, s.apiError("ListResourceRecordSets", err)
	}
	for _, r := range resp.ResourceRecordSets {
		if normName(unescape(aws.ToString(r.Name))) == name && r.Type == types.RRTypeTxt && r.SetIdentifier == nil {
			return &r, nil
		}
	}
	return nil, nil
}

// txtText joins a TXT record's strings, unquoted.
func txtText(r types.ResourceRecordSet) string {
	var b strings.Builder
	for _, v := range r.ResourceRecords {
		for _, part := range splitTXT(aws.ToString(v.Value)) {
			b.WriteString(part)
		}
	}
	return b.String()
}

// splitTXT reads one TXT value, a sequence of quoted strings ("a" "b") with \" and \\
// escapes; an unquoted value is taken as is.
func splitTXT(v string) []string {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, `"`) {
		return []string{v}
	}
	var out []string
	var cur strings.Builder
	in, esc := false, false
	for _, c := range v {
		switch {
		case esc:
			cur.WriteRune(c)
			esc = false
		case c == '\\' && in:
			esc = true
		case c == '"':
			if in {
				out = append(out, cur.String())
				cur.Reset()
			}
			in = !in
		case in:
			cur.WriteRune(c)
		}
	}
	return out
}

// txtValue encodes text as one TXT value of quoted strings of at most 255 characters.
func txtValue(text string) string {
	var parts []string
	for len(text) > 0 {
		n := min(len(text), 200)
		chunk := text[:n]
		text = text[n:]
		chunk = strings.ReplaceAll(chunk, `\`, `\\`)
		chunk = strings.ReplaceAll(chunk, `"`, `\"`)
		parts = append(parts, `"`+chunk+`"`)
	}
	if len(parts) == 0 {
		return `""`
	}
	return strings.Join(parts, " ")
}

// Claim marks the record set as driven by cl.Run in its claim TXT record (ClaimName),
// which every Verdict reads as the pool's Description. Each attempt decides from a fresh
// read (another run's claim is refused unless force) and UPSERTs only the TXT record, so
// no weighted record is ever in the batch; the claim is read back to check it is ours.
func (s *Steerer) Claim(ctx context.Context, ref traffic.PoolRef, cl traffic.Claim, force bool) error {
	t, err := s.resolve(ref)
	if err != nil {
		return err
	}
	if cl.Run == "" {
		return fmt.Errorf("claim record set %s: no run ID", t.ref)
	}
	marker := cl.String()
	err = s.describe(ctx, t, "claim", func(desc string) (string, error) {
		if other, ok := traffic.ParseClaim(desc); ok && other.Run != cl.Run && !force {
			return "", &traffic.ClaimedError{Pool: t.ref, Claim: other}
		} else if ok && other.Run != cl.Run {
			s.log.Warn("taking over another run's claim (forced)", "pool", t.ref.String(), "run", other.Run, "owner", other.Owner)
		}
		return traffic.WithClaim(desc, marker), nil
	})
	if err != nil {
		return err
	}
	back, err := s.Pool(ctx, t.ref)
	if err != nil {
		return fmt.Errorf("claim record set %s: written, but reading back to verify failed: %w", t.ref, err)
	}
	got, ok := back.Claim()
	switch {
	case !ok:
		return fmt.Errorf("claim record set %s: the claim is not in %s after writing it (text %q)", t.ref, "_verdict."+t.name, back.Description)
	case got.Run != cl.Run || got.Owner != cl.Owner:
		return &traffic.ClaimedError{Pool: t.ref, Claim: got}
	}
	return nil
}

// Release replaces last.Run's claim with last's note, deciding from a fresh read at every
// attempt: a set taken over by another run is left alone (*traffic.ClaimedError), a set
// with no claim gets the note anyway.
func (s *Steerer) Release(ctx context.Context, ref traffic.PoolRef, last traffic.LastRun) error {
	t, err := s.resolve(ref)
	if err != nil {
		return err
	}
	if last.Run == "" {
		return fmt.Errorf("release record set %s: no run ID", t.ref)
	}
	marker := last.String()
	err = s.describe(ctx, t, "release", func(desc string) (string, error) {
		if other, ok := traffic.ParseClaim(desc); ok && other.Run != last.Run {
			return "", &traffic.ClaimedError{Pool: t.ref, Claim: other}
		}
		return traffic.WithClaim(desc, marker), nil
	})
	if err != nil {
		return err
	}
	back, err := s.Pool(ctx, t.ref)
	if err != nil {
		return fmt.Errorf("release record set %s: written, but reading back to verify failed: %w", t.ref, err)
	}
	if got, ok := back.Claim(); ok && got.Run == last.Run {
		return fmt.Errorf("release record set %s: run %s's claim is still there after removing it (owner %s): is another process driving the run?", t.ref, got.Run, got.Owner)
	}
	return nil
}

// describe writes the text decide returns for the claim record as just read: one read
// and one UPSERT of only that TXT record per attempt, nothing when it is already so.
func (s *Steerer) describe(ctx context.Context, t target, op string, decide func(string) (string, error)) error {
	name := "_verdict." + t.name
	err := s.do(ctx, op+" record set "+t.ref.String(), func(ctx context.Context) error {
		// The set must exist: a claim on a name Verdict cannot steer is a mistake.
		if _, err := s.list(ctx, t.zone, t.name, t.rrType); err != nil {
			return err
		}
		rec, err := s.claimRecord(ctx, t)
		if err != nil {
			return err
		}
		cur := ""
		if rec != nil {
			cur = txtText(*rec)
		}
		text, err := decide(cur)
		if err != nil {
			return final(err)
		}
		if text == cur && rec != nil {
			return nil
		}
		r := types.ResourceRecordSet{Name: aws.String(name), Type: types.RRTypeTxt, TTL: aws.Int64(ClaimTTL)}
		if rec != nil {
			r = *rec
		}
		r.ResourceRecords = []types.ResourceRecord{{Value: aws.String(txtValue(text))}}
		_, err = s.client.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{
			HostedZoneId: aws.String(t.zone),
			ChangeBatch: &types.ChangeBatch{
				Comment: aws.String(comment("verdict: " + op + " " + t.ref.Pool)),
				Changes: []types.Change{{Action: types.ChangeActionUpsert, ResourceRecordSet: &r}},
			},
		})
		if err != nil {
			return s.apiError("ChangeResourceRecordSets", err)
		}
		return nil
	})
	var ce *traffic.ClaimedError
	if errors.As(err, &ce) {
		return err
	}
	if err != nil {
		return fmt.Errorf("%s record set %s: %w", op, t.ref, err)
	}
	return nil
}
