package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestScrub: whatever a driver puts in an error, the password does not get out, and the
// error still matches what it wraps.
func TestScrub(t *testing.T) {
	for name, tc := range map[string]struct{ dsn, leak string }{
		"url":         {"postgres://u:pa%2Fss@h/db", "pa/ss"},
		"url escaped": {"postgres://u:pa%2Fss@h/db", "pa%2Fss"},
		"query":       {"postgres://h/db?password=pw+1&user=u", "pw 1"},
		"key=value":   {"host=h password='p w' user=u", "p w"},
	} {
		t.Run(name, func(t *testing.T) {
			inner := fmt.Errorf("dial %s: %w", tc.leak, context.DeadlineExceeded)
			err := scrub(fmt.Errorf("connect: %w", inner), tc.dsn)
			if strings.Contains(err.Error(), tc.leak) {
				t.Errorf("password in %q", err)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("scrubbing lost the wrapped error: %v", err)
			}
		})
	}
	if err := scrub(nil, "postgres://u:p@h/db"); err != nil {
		t.Errorf("scrub(nil) = %v", err)
	}
}
